"""``dspylite better-together configs/better_together.yaml``: BetterTogether alternates a prompt optimizer
(p) and a weight optimizer (w: BootstrapFinetune or GRPO) along a strategy such as ``p -> w -> p``,
picks the best stage on held-out dev examples, and the baseline and the best program are scored on test.

Each stage's optimizer works in its own directory (``work/<p|w>-<k>/``) so a rerun with the same run_dir
skips finished stages and resumes the unfinished one; every adapter is registered in ``adapters/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dspylite.config_io import field_help as _help
from dspylite.config_io import load_config
from dspylite.errors import ConfigError, OptimizerError
from dspylite.jobs.session import JobSession, Say, log_say, open_session
from dspylite.jobs.settings import BootstrapSettings, LMSettings, PromptOptimizerSettings
from dspylite.jobs.tasks import TaskSettings, load_task
from dspylite.optimizers.weights import WeightOptimizer
from finetune.config import FinetuneConfig
from rl.config import GRPOConfig
from serving.config import ServerConfig

WORK_DIR = "work"


@dataclass
class BetterTogetherJobConfig:
    run_dir: str = field(
        default="runs/better_together", metadata=_help("Where everything this job writes goes.")
    )
    model: str = field(
        default="",
        metadata=_help(
            "Base model (served and trained): a checkpoint directory or a named source; empty: the built-in "
            "tiny model. With server.api_base, empty means the model the server reports."
        ),
    )
    program_path: str = field(
        default="",
        metadata=_help("A saved program.json to start from; empty: the task's program as written."),
    )
    strategy: str = field(
        default="p -> w -> p", metadata=_help("Steps over p (prompt) and w (weights), joined by ->.")
    )
    weights: Literal["finetune", "grpo"] = field(
        default="finetune",
        metadata=_help("The weight optimizer: finetune (BootstrapFinetune) or grpo (GRPO)."),
    )
    valset_size: int = field(
        default=0, metadata=_help("Dev examples BetterTogether selects stages on; 0: the whole dev split.")
    )
    task: TaskSettings = field(
        default_factory=TaskSettings, metadata=_help("The task: program, data, metric.")
    )
    server: ServerConfig = field(default_factory=ServerConfig, metadata=_help("vLLM (LoRA enabled)."))
    lm: LMSettings = field(default_factory=LMSettings, metadata=_help("The LM client."))
    prompt: PromptOptimizerSettings = field(
        default_factory=PromptOptimizerSettings, metadata=_help("The prompt optimizer (p steps).")
    )
    bootstrap: BootstrapSettings = field(
        default_factory=lambda: BootstrapSettings(run_name="bt"),
        metadata=_help("weights=finetune: BootstrapFinetune's trace collection (w steps)."),
    )
    sft: FinetuneConfig = field(
        default_factory=FinetuneConfig, metadata=_help("weights=finetune: LoRA SFT (finetune.config).")
    )
    grpo: GRPOConfig = field(
        default_factory=GRPOConfig, metadata=_help("weights=grpo: GRPO (rl.config.GRPOConfig).")
    )

    def __post_init__(self) -> None:
        from dspylite.optimizers.better_together import parse_strategy

        try:
            parse_strategy(self.strategy)
        except OptimizerError as exc:
            raise ValueError(str(exc)) from None
        if self.valset_size < 0:
            raise ValueError(f"valset_size must be >= 0, got {self.valset_size}")
        if self.weights == "finetune":
            self.server.check_lora_ranks(sft=self.sft.lora.r)
        else:
            self.server.check_lora_ranks(grpo=self.grpo.lora.r)


@dataclass
class BetterTogetherJobResult:
    run_dir: Path
    best_stage: str
    scores: dict[str, dict[str, dict[str, Any]]]  # "baseline" | "best" -> split -> score record
    seconds: float


class PerStage:
    """An optimizer front-end that builds a fresh optimizer, in a fresh directory, for every stage.

    Optimizer run directories are tied to one setup (a second compile there would be refused or
    mistaken for a resume), so the k-th p (or w) step works in ``work/<step>-<k>``; k counts this
    run's earlier compiles of the step plus the finished stages on disk, so a resume keeps the numbering.
    ``stages_dir`` is where BetterTogether records its stages (the run directory by default; the demo
    runs it in a stage's subdirectory) and ``work_dir`` where the per-stage directories go.
    """

    def __init__(
        self,
        step: str,
        build: Callable[[Path], Any],
        session: JobSession,
        *,
        stages_dir: Path | None = None,
        work_dir: Path | None = None,
    ):
        self.step, self.build, self.session = step, build, session
        self.stages_dir = stages_dir or session.run.path
        self.work_dir = work_dir or session.run.path / WORK_DIR

    def compile(self, student: Any, **kwargs: Any) -> Any:
        return self._build_next().compile(student, **kwargs)

    def _build_next(self) -> Any:
        from dspylite.optimizers.stages import load_stages

        finished = load_stages(self.stages_dir)
        k = 1 + sum(1 for s in finished if s.name.split(" -> ")[-1] == self.step)
        return self.build(self.work_dir / f"{self.step}-{k}")


class PerStageWeights(PerStage, WeightOptimizer):
    """PerStage for the weight step: a WeightOptimizer whose backend is the session's (its adapters are
    registered in the run's registry) and whose ``published`` is the last stage optimizer's."""

    def __init__(self, step: str, build: Callable[[Path], Any], session: JobSession, **dirs: Any):
        super().__init__(step, build, session, **dirs)
        self.backend = session.backend
        self.published: dict[str, str] = {}

    def compile(self, student: Any, **kwargs: Any) -> Any:
        optimizer = self._build_next()
        program = optimizer.compile(student, **kwargs)
        self.published = dict(optimizer.published)
        return program


def run_better_together_job(
    config: str | Path | None, overrides: list[str] | dict[str, Any] = (), *, say: Say = log_say
) -> BetterTogetherJobResult:
    from dspylite.optimizers.better_together import BetterTogether

    cfg = load_config(BetterTogetherJobConfig, config, overrides)
    task = load_task(cfg.task)
    trainset, devset = task.split("train"), task.split("dev")
    if not trainset or not devset:
        raise ConfigError("BetterTogether needs train and dev examples (task.n_train, task.n_dev)")
    valset = devset[: cfg.valset_size] if cfg.valset_size else devset
    started = time.perf_counter()
    with open_session("better_together", cfg, say=say, task=task) as session:
        student = session.load_program(cfg.program_path)
        prompt = PerStage("p", lambda path: session.prompt_optimizer(cfg.prompt, path), session)

        def weights_builder(path: Path) -> Any:
            if cfg.weights == "finetune":
                return session.bootstrap_finetune(cfg.bootstrap, cfg.sft, path)
            return session.grpo(cfg.grpo, path)

        bt = BetterTogether(
            task.metric,
            prompt_optimizer=prompt,
            weight_optimizer=PerStageWeights("w", weights_builder, session),
            num_threads=cfg.lm.num_threads,
            seed=cfg.task.seed,
            run_dir=session.run,
        )
        say(
            f"BetterTogether {cfg.strategy!r} ({cfg.weights}): {len(trainset)} train, {len(valset)} dev to select"
        )
        best = bt.compile(student, trainset=trainset, valset=valset, strategy=cfg.strategy)
        best_stage = bt.best_stage()
        session.serve_adapters(best, adapters=best_stage.adapters)
        scores = session.score_splits({"baseline": student, "best": best})
        session.finish(
            strategy=cfg.strategy,
            weights=cfg.weights,
            prompt_optimizer=cfg.prompt.kind,
            program=type(student).__name__,
            n_train=len(trainset),
            n_val=len(valset),
            best_stage=best_stage.name,
            scores=scores,
            seconds=round(time.perf_counter() - started, 1),
        )
    return BetterTogetherJobResult(
        session.run.path, best_stage.name, scores, round(time.perf_counter() - started, 1)
    )
