"""``dspylite better-together configs/better_together.yaml``: BetterTogether alternates a prompt optimizer
(p) and a weight optimizer (w: BootstrapFinetune or GRPO) along a strategy such as ``p -> w -> p``,
picks the best stage on held-out dev examples, and the baseline and the best program are scored on test.

Each stage's optimizer works in its own directory (``work/<p|w>-<k>/``) so a rerun with the same run_dir
skips finished stages and resumes the unfinished one; every adapter is indexed in ``adapters/``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dspylite.config_io import load_config
from dspylite.errors import ConfigError, OptimizerError
from dspylite.jobs.common import (
    JOB_FILE,
    LMSettings,
    Say,
    ServerSettings,
    describe_model,
    ensure_adapters_served,
    lm_usage,
    log_say,
    open_program_session,
    open_run,
    resolve_model,
    score_on_splits,
)
from dspylite.jobs.optimize_job import PromptOptimizerSettings, build_prompt_optimizer
from dspylite.jobs.tasks import TaskSettings, load_task
from dspylite.run_dir import RunDir
from finetune.config import FinetuneConfig
from rl.config import GRPOConfig

logger = logging.getLogger(__name__)

STAGES_FILE = "stages.json"  # written by BetterTogether
WORK_DIR = "work"


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class FinetuneWeightSettings:
    samples_per_example: int = field(
        default=2,
        metadata=_help(
            "Teacher runs per training example (the first greedy, the rest at sample_temperature)."
        ),
    )
    sample_temperature: float = field(
        default=0.8, metadata=_help("Temperature of the extra teacher samples.")
    )
    multitask: bool = field(
        default=True, metadata=_help("One adapter shared by every predictor (else one each).")
    )
    run_name: str = field(default="bt", metadata=_help("Adapter names are <run_name>-<n>."))
    sft: FinetuneConfig = field(
        default_factory=FinetuneConfig, metadata=_help("LoRA SFT settings (finetune.config.FinetuneConfig).")
    )


@dataclass
class BetterTogetherJobConfig:
    run_dir: str = field(
        default="runs/better_together", metadata=_help("Where everything this job writes goes.")
    )
    model: str = field(
        default="",
        metadata=_help(
            "Base model directory (served and trained); empty: the built-in tiny model. With server.api_base, "
            "empty means the model the server reports."
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
    server: ServerSettings = field(default_factory=ServerSettings, metadata=_help("vLLM (LoRA enabled)."))
    lm: LMSettings = field(default_factory=LMSettings, metadata=_help("The LM client."))
    prompt: PromptOptimizerSettings = field(
        default_factory=PromptOptimizerSettings, metadata=_help("The prompt optimizer (p steps).")
    )
    finetune: FinetuneWeightSettings = field(
        default_factory=FinetuneWeightSettings,
        metadata=_help("weights=finetune: BootstrapFinetune (w steps)."),
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


@dataclass
class BetterTogetherJobResult:
    run_dir: Path
    best_stage: str
    scores: dict[str, dict[str, dict[str, Any]]]  # "baseline" | "best" -> split -> score record
    seconds: float


class PerStage:
    """An optimizer front-end that builds a fresh optimizer, in a fresh directory, for every stage.

    Optimizer run directories are tied to one setup (a second compile there would be refused or
    mistaken for a resume), so the k-th p (or w) step works in ``work/<step>-<k>``; k counts the
    finished stages in stages.json, which keeps the numbering stable across a resume.
    """

    def __init__(self, step: str, build: Callable[[Path], Any], run: RunDir, server: Any):
        self.step, self.build, self.run, self.server = step, build, run, server
        self.last: Any = None

    def compile(self, student: Any, **kwargs: Any) -> Any:
        # After a restart the server lacks the adapters earlier (finished) stages trained.
        ensure_adapters_served(student, self.server, search_root=self.run.path)
        finished = self.run.load_json(STAGES_FILE, []) or []
        k = 1 + sum(1 for s in finished if str(s.get("label", "")).split(" -> ")[-1] == self.step)
        self.last = self.build(self.run.path / WORK_DIR / f"{self.step}-{k}")
        return self.last.compile(student, **kwargs)


def run_better_together_job(
    config: str | Path | None, overrides: list[str] | dict[str, Any] = (), *, say: Say = log_say
) -> BetterTogetherJobResult:
    from dspylite.jobs.report_job import render_report
    from dspylite.optimizers import BetterTogether

    cfg = load_config(BetterTogetherJobConfig, config, overrides)
    if cfg.weights == "finetune" and cfg.finetune.sft.lora.r > cfg.server.max_lora_rank:
        raise ConfigError(
            f"finetune.sft.lora.r={cfg.finetune.sft.lora.r} exceeds server.max_lora_rank={cfg.server.max_lora_rank}"
        )
    if cfg.weights == "grpo" and cfg.grpo.lora.r > cfg.server.max_lora_rank:
        raise ConfigError(
            f"grpo.lora.r={cfg.grpo.lora.r} exceeds server.max_lora_rank={cfg.server.max_lora_rank}"
        )
    task = load_task(cfg.task)
    trainset, devset = task.split("train"), task.split("dev")
    if not trainset or not devset:
        raise ConfigError("BetterTogether needs train and dev examples (task.n_train, task.n_dev)")
    valset = devset[: cfg.valset_size] if cfg.valset_size else devset
    run = open_run(cfg.run_dir, cfg, "better_together")
    model_dir = resolve_model(cfg.model, say) if (cfg.model or not cfg.server.api_base) else ""
    started = time.perf_counter()
    with open_program_session(model_dir, cfg.server, cfg.lm, run, task, cfg.program_path, say) as session:
        server, lm, student = session.server, session.lm, session.program
        prompt = PerStage(
            "p",
            lambda path: build_prompt_optimizer(cfg.prompt, task.metric, path, cfg.lm.num_threads),
            run,
            server,
        )
        weights = PerStage("w", _weight_builder(cfg, task.metric, server, model_dir, lm, run), run, server)
        bt = BetterTogether(
            task.metric,
            prompt_optimizer=prompt,
            weight_optimizer=weights,
            num_threads=cfg.lm.num_threads,
            seed=cfg.task.seed,
            run_dir=run,
        )
        say(
            f"BetterTogether {cfg.strategy!r} ({cfg.weights}): {len(trainset)} train, {len(valset)} dev to select"
        )
        best = bt.compile(student, trainset=trainset, valset=valset, strategy=cfg.strategy)
        best_stage = max(bt.stages, key=lambda s: (s.score, -s.index))
        ensure_adapters_served(best, server, search_root=run.path)
        scores = score_on_splits({"baseline": student, "best": best}, task, run, cfg.lm.num_threads, say)
    seconds = round(time.perf_counter() - started, 1)
    run.save_json(
        JOB_FILE,
        {
            "kind": "better_together",
            "status": "done",
            "strategy": cfg.strategy,
            "weights": cfg.weights,
            "prompt_optimizer": cfg.prompt.kind,
            "task": cfg.task.name,
            "model": describe_model(model_dir, cfg.server),
            "program": type(student).__name__,
            "n_train": len(trainset),
            "n_val": len(valset),
            "best_stage": best_stage.label,
            "scores": scores,
            "usage": lm_usage(lm),
            "seconds": seconds,
        },
    )
    render_report(run.path)
    return BetterTogetherJobResult(run.path, best_stage.label, scores, seconds)


def _weight_builder(
    cfg: BetterTogetherJobConfig, metric: Any, server: Any, model_dir: str, lm: Any, run: RunDir
) -> Callable[[Path], Any]:
    from serving.registry import AdapterRegistry

    registry = AdapterRegistry(run.adapters_dir)

    def finetune(path: Path) -> Any:
        from dspylite.optimizers import BootstrapFinetune

        settings = cfg.finetune
        return BootstrapFinetune(
            metric,
            server=server,
            model_path=model_dir or None,
            config=settings.sft,
            multitask=settings.multitask,
            num_threads=cfg.lm.num_threads,
            run_dir=path,
            registry=registry,
            run_name=f"{settings.run_name}-{path.name}",
            samples_per_example=settings.samples_per_example,
            sample_temperature=settings.sample_temperature,
            lm=lm,
        )

    def grpo(path: Path) -> Any:
        from dspylite.optimizers import GRPO

        return GRPO(metric, server=server, model_path=model_dir or None, config=cfg.grpo, run_dir=path, lm=lm)

    return finetune if cfg.weights == "finetune" else grpo
