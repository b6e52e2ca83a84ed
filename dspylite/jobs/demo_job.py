"""The main job: one program improved by prompts, by weights, and by both, on one vLLM server.

    dspylite demo configs/demo.yaml                     # the tiny local model, CPU is fine
    dspylite demo configs/demo.yaml model=/path/to/ckpt # a real checkpoint on a GPU workstation

A pipeline of stages, each a function from the earlier stages' records to its own ``StageRecord``
(program file, the adapters it is bound to, per-example dev and test scores, failures, time):
baseline -> prompt-only (BootstrapFewShotWithRandomSearch) -> weights-only (BootstrapFinetune LoRA SFT)
-> GRPO from the base model -> SFT+GRPO (GRPO starting from the SFT record's adapter) -> prompt+GRPO
(GRPO from the base weights on the prompt stage's program, demos and all: mmGRPO's order) -> BetterTogether.
``stages.json`` keeps the records (the schema BetterTogether writes too); a rerun with the same run_dir
loads finished stages from their records, re-serving their adapters, and runs the rest.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspylite.activity import stage as activity_stage
from dspylite.config_io import field_help as _help
from dspylite.config_io import load_config
from dspylite.errors import ConfigError
from dspylite.jobs.report_job import DEMO_STAGE_TITLES, DEMO_STAGES, JOB_FILE
from dspylite.jobs.session import JobSession, Say, log_say, open_session
from dspylite.jobs.settings import BootstrapSettings, LMSettings, PromptOptimizerSettings
from dspylite.jobs.tasks import TaskSettings, load_task
from dspylite.optimizers.config import RandomSearchSettings
from dspylite.optimizers.stages import StageRecord, load_stages, save_stages
from dspylite.optimizers.weights import WeightOptimizer
from finetune.config import FinetuneConfig
from rl.config import GRPOConfig
from serving.config import ServerConfig

logger = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    run_dir: str = field(default="runs/demo", metadata=_help("Run directory; rerunning resumes it."))
    model: str = field(
        default="",
        metadata=_help(
            "Base model: a checkpoint directory or a named source; empty: the built-in tiny model."
        ),
    )
    stages: list[str] = field(
        # prompt_grpo is asked for by name: a second full GRPO run, which on a model whose prompt stage
        # keeps the zero-shot program repeats the GRPO stage.
        default_factory=lambda: [s for s in DEMO_STAGES if s != "prompt_grpo"],
        metadata=_help(f"Which stages to run, from {DEMO_STAGES} (all but prompt_grpo by default)."),
    )
    task: TaskSettings = field(
        default_factory=lambda: TaskSettings(n_train=2000, n_dev=400, n_test=400),
        metadata=_help("The task (fact_qa by default): train feeds the optimizers, dev picks, test reports."),
    )
    server: ServerConfig = field(default_factory=ServerConfig, metadata=_help("vLLM or a running server."))
    lm: LMSettings = field(
        default_factory=lambda: LMSettings(max_tokens=512, num_threads=16), metadata=_help("The LM client.")
    )
    selection_size: int = field(
        default=150, metadata=_help("Dev examples the prompt search and BetterTogether select on (dev[:N]).")
    )
    prompt: PromptOptimizerSettings = field(
        default_factory=lambda: PromptOptimizerSettings(
            kind="random_search",
            max_bootstrapped_demos=2,
            max_labeled_demos=0,
            random_search=RandomSearchSettings(num_candidate_programs=3),
        ),
        metadata=_help("The prompt stage's optimizer (also BetterTogether's p step)."),
    )
    bootstrap: BootstrapSettings = field(
        default_factory=BootstrapSettings, metadata=_help("SFT stage: BootstrapFinetune's trace collection.")
    )
    sft: FinetuneConfig = field(
        # vLLM idles while the adapter trains: both cores of a 2-core machine train.
        default_factory=lambda: FinetuneConfig(threads=2),
        metadata=_help("SFT stage (and BetterTogether's w step): LoRA SFT (finetune.config)."),
    )
    grpo: GRPOConfig = field(
        default_factory=GRPOConfig,
        metadata=_help("GRPO-from-base stage (rl.config.GRPOConfig, the measured recipe)."),
    )
    sft_grpo: GRPOConfig = field(
        # The measured SFT+GRPO recipe: short, and hotter than the from-base one.
        default_factory=lambda: GRPOConfig(num_steps=10, val_every=5, temperature=0.7, learning_rate=5e-4),
        metadata=_help("SFT + GRPO stage: GRPO from the SFT stage's adapter."),
    )
    prompt_grpo: GRPOConfig = field(
        # From the base weights, as the GRPO stage: the same recipe, on the prompt stage's program.
        default_factory=GRPOConfig,
        metadata=_help(
            "prompt + GRPO stage (mmGRPO's order): GRPO from the base weights on the prompt stage's "
            "program, its demos in every rollout's prompt."
        ),
    )
    grpo_valset_size: int = field(default=150, metadata=_help("Dev examples GRPO picks its best version on."))
    strategy: str = field(default="p -> w", metadata=_help("BetterTogether strategy over p and w."))

    def __post_init__(self) -> None:
        from dspylite.errors import OptimizerError
        from dspylite.optimizers.better_together import parse_strategy

        unknown = [s for s in self.stages if s not in DEMO_STAGES]
        if unknown:
            raise ValueError(f"stages: unknown stage(s) {unknown}; choose from {DEMO_STAGES}")
        try:  # checked here, not after the stages before better_together have run
            parse_strategy(self.strategy)
        except OptimizerError as exc:
            raise ValueError(str(exc)) from None
        self.server.check_lora_ranks(
            sft=self.sft.lora.r,
            grpo=self.grpo.lora.r,
            sft_grpo=self.sft_grpo.lora.r,
            prompt_grpo=self.prompt_grpo.lora.r,
        )


def run_demo(
    config: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), *, say: Say = log_say
) -> Path:
    """Run the whole demo; returns the run directory."""
    from dspylite import activity

    cfg = load_config(DemoConfig, config, list(overrides))
    task = load_task(cfg.task)
    started = time.time()
    activity.reset()
    with open_session("demo", cfg, say=say, task=task) as session:
        pipeline = DemoPipeline(cfg, session)
        pipeline.run()
        session.finish(
            stages=[r.name for r in pipeline.records],
            seconds=round(time.time() - started, 1),
            activity=pipeline.activity(),
        )
    return session.run.path


class DemoPipeline:
    """Runs the configured stages in order; each returns a StageRecord that later stages read."""

    def __init__(self, cfg: DemoConfig, session: JobSession):
        self.cfg = cfg
        self.session = session
        self.task = session.task
        self.records: list[StageRecord] = []
        self.on_disk: dict[str, StageRecord] = {}  # the finished stages stages.json held when run() began
        # Optimizer results keyed by (step kind, input program state): BetterTogether's steps reuse
        # the single-stage results when their input program is the same one.
        self.memo: dict[tuple[str, str], tuple[Any, dict[str, str]]] = {}
        # The wall-time breakdown of the interrupted runs this one resumes (open_run carried it over).
        self.earlier_activity = (session.run.load_json(JOB_FILE, {}) or {}).get("earlier_activity")

    def run(self) -> list[StageRecord]:
        done = {r.name: r for r in load_stages(self.session.run.path)}
        self.on_disk = done
        stages: dict[str, Callable[[Path], tuple[Any, dict[str, str]]]] = {
            "baseline": self._baseline,
            "prompt": self._prompt,
            "sft": self._sft,
            "grpo": self._grpo,
            "sft_grpo": self._sft_grpo,
            "prompt_grpo": self._prompt_grpo,
            "better_together": self._better_together,
        }
        for name in [s for s in DEMO_STAGES if s in self.cfg.stages]:
            record = done.get(name)
            if record is not None and Path(record.program_path).exists():
                self.session.say(f"[{name}] already finished; loading {record.program_path}")
                self.records.append(record)
                self._program(name)  # re-serves its bound adapters: a restarted server has none of them
                continue
            self.records.append(self._stage(name, stages[name]))
            self._save()
            # A killed run keeps the breakdown of the stages it finished; its resumption adds to it.
            job = self.session.run.load_json(JOB_FILE, {}) or {}
            self.session.run.save_json(JOB_FILE, {**job, "activity": self.activity()})
        return self.records

    def _save(self) -> None:
        """Write stages.json: this run's records, and every finished stage it has not reached yet (a stage
        added on resume runs before them; dropping their records would train them again next time)."""
        names = {r.name for r in self.records}
        pending = [r for r in self.on_disk.values() if r.name not in names]
        save_stages(self.session.run.path, sorted([*self.records, *pending], key=lambda r: r.index))

    def activity(self) -> dict[str, dict[str, float]]:
        """Wall time by stage and activity: this run's, plus that of the interrupted runs it resumes."""
        from dspylite import activity

        return activity.breakdown(self.earlier_activity)

    # ---- infrastructure -------------------------------------------------------------------------
    def _stage(self, name: str, compile_fn: Callable[[Path], tuple[Any, dict[str, str]]]) -> StageRecord:
        say = self.session.say
        say(f"[{name}] {DEMO_STAGE_TITLES[name]} ...")
        stage_dir = self.session.run.path / "stages" / name
        start = time.time()
        scores: dict[str, list[float]] = {}
        errors: dict[str, dict[str, int]] = {}
        with activity_stage(name):  # the report's wall time by stage and activity
            program, adapters = compile_fn(stage_dir)
            for split in ("dev", "test"):
                # A stage whose every run failed (e.g. a model that never follows the format) is a measured
                # result here: it scores 0 and the failures column says why.
                result = self.session.evaluate(program, self.task.split(split), raise_if_all_failed=False)
                scores[split] = list(result.scores)
                errors[split] = dict(result.error_counts)
                self.session.run.log_metrics(
                    stage=name, split=split, score=result.score, errors=result.error_counts
                )
        program_path = program.save(stage_dir / "program.json")
        bound = {getattr(p.lm, "model", None) for _, p in program.named_predictors() if p.lm is not None}
        record = StageRecord(
            name=name,
            program_path=str(program_path),
            adapters={k: v for k, v in adapters.items() if k in bound},
            scores=scores,
            seconds=round(time.time() - start, 1),
            index=DEMO_STAGES.index(name),
            errors=errors,
        )
        say(
            f"[{name}] dev {100 * record.mean('dev'):.1f}  test {100 * record.mean('test'):.1f}  ({record.seconds:.0f}s)"
        )
        return record

    def _program(self, name: str) -> Any:
        """The program an earlier stage produced (its record), with its adapters served."""
        record = next((r for r in self.records if r.name == name), None)
        if record is None:
            raise ConfigError(f"stage {name!r} must run before the stages that start from it")
        program = self.task.make_program()
        program.load(record.program_path)
        self.session.serve_adapters(program, adapters=record.adapters)
        return program

    def _selection_set(self) -> list[Any]:
        return self.task.split("dev")[: self.cfg.selection_size]

    def _prompt_optimizer(self, stage_dir: Path) -> Any:
        return _Memo(self._new_prompt_optimizer(stage_dir), "p", self.memo)

    def _weight_optimizer(self, stage_dir: Path) -> Any:
        return _MemoWeights(self._new_weight_optimizer(stage_dir), "w", self.memo)

    def _new_prompt_optimizer(self, stage_dir: Path) -> Any:
        return self.session.prompt_optimizer(self.cfg.prompt, stage_dir / "search")

    def _new_weight_optimizer(self, stage_dir: Path) -> Any:
        return self.session.bootstrap_finetune(self.cfg.bootstrap, self.cfg.sft, stage_dir / "finetune")

    # ---- stages -------------------------------------------------------------------------------------
    def _baseline(self, stage_dir: Path) -> tuple[Any, dict[str, str]]:
        return self.task.make_program(), {}

    def _prompt(self, stage_dir: Path) -> tuple[Any, dict[str, str]]:
        optimizer = self._prompt_optimizer(stage_dir)
        program = optimizer.compile(
            self.task.make_program(), trainset=self.task.split("train"), valset=self._selection_set()
        )
        return program, {}

    def _sft(self, stage_dir: Path) -> tuple[Any, dict[str, str]]:
        optimizer = self._weight_optimizer(stage_dir)
        program = optimizer.compile(self.task.make_program(), trainset=self.task.split("train"))
        return program, dict(optimizer.published)

    def _grpo(self, stage_dir: Path) -> tuple[Any, dict[str, str]]:
        # From the base model unless grpo.init_adapter names an adapter to start from.
        init = self.cfg.grpo.init_adapter or "base"
        return self._run_grpo(self.task.make_program(), self.cfg.grpo, stage_dir, init_adapter=init)

    def _sft_grpo(self, stage_dir: Path) -> tuple[Any, dict[str, str]]:
        sft_adapters = self._ensure("sft", self._sft).adapters
        start = self._program("sft")
        # From the SFT stage's adapter unless sft_grpo.init_adapter names another start.
        init = self.cfg.sft_grpo.init_adapter or next(iter(sft_adapters.values()), None) or "base"
        return self._run_grpo(start, self.cfg.sft_grpo, stage_dir, init_adapter=init)

    def _prompt_grpo(self, stage_dir: Path) -> tuple[Any, dict[str, str]]:
        # mmGRPO's order: prompt optimization first, then GRPO on that program from the base weights
        # (unless prompt_grpo.init_adapter names a start). The demos stay in the rollouts' prompts, so
        # the adapter is trained on the prompts it is served with.
        self._ensure("prompt", self._prompt)
        start = self._program("prompt")
        init = self.cfg.prompt_grpo.init_adapter or "base"
        return self._run_grpo(start, self.cfg.prompt_grpo, stage_dir, init_adapter=init)

    def _ensure(self, name: str, compile_fn: Callable[[Path], tuple[Any, dict[str, str]]]) -> StageRecord:
        """The record of stage ``name``, run now (and saved) if this run has none: a stage that starts
        from another's result needs it even when ``stages`` leaves it out."""
        if not any(r.name == name for r in self.records):
            self.records.append(self._stage(name, compile_fn))
            self._save()
        return next(r for r in self.records if r.name == name)

    def _run_grpo(
        self, start: Any, config: GRPOConfig, stage_dir: Path, *, init_adapter: str
    ) -> tuple[Any, dict[str, str]]:
        grpo = self.session.grpo(dataclasses.replace(config, init_adapter=init_adapter), stage_dir / "grpo")
        program = grpo.compile(
            start,
            trainset=self.task.split("train"),
            valset=self.task.split("dev")[: self.cfg.grpo_valset_size],
        )
        return program, dict(grpo.published)

    def _better_together(self, stage_dir: Path) -> tuple[Any, dict[str, str]]:
        from dspylite.jobs.better_together_job import PerStage, PerStageWeights
        from dspylite.optimizers.better_together import BetterTogether

        # Each p (and w) step of the strategy compiles in its own directory (p-1, w-1, p-2, ...): an
        # optimizer's run directory belongs to one student, and "p -> w -> p" compiles two.
        bt_dir = stage_dir / "bt"
        dirs = {"stages_dir": bt_dir, "work_dir": stage_dir}
        prompt = PerStage("p", self._new_prompt_optimizer, self.session, **dirs)
        weights = PerStageWeights("w", self._new_weight_optimizer, self.session, **dirs)
        bt = BetterTogether(
            self.task.metric,
            prompt_optimizer=_Memo(prompt, "p", self.memo),
            weight_optimizer=_MemoWeights(weights, "w", self.memo),
            num_threads=self.cfg.lm.num_threads,
            seed=self.cfg.task.seed,
            run_dir=bt_dir,
        )
        program = bt.compile(
            self.task.make_program(),
            trainset=self.task.split("train"),
            valset=self._selection_set(),
            strategy=self.cfg.strategy,
        )
        return program, dict(bt.best_stage().adapters)


class _Memo:
    """Wraps an optimizer so that compiling the same program state twice in one demo trains once."""

    def __init__(self, optimizer: Any, kind: str, memo: dict[tuple[str, str], tuple[Any, dict[str, str]]]):
        self.optimizer = optimizer
        self.kind = kind
        self.memo = memo

    def compile(self, program: Any, **kwargs: Any) -> Any:
        return self._compile(program, **kwargs)[0]

    def _compile(self, program: Any, **kwargs: Any) -> tuple[Any, dict[str, str]]:
        """(the result, the adapters published for it): remembered, or compiled now."""
        key = (self.kind, json.dumps(program.dump_state(), sort_keys=True, default=str))
        if key not in self.memo:
            result = self.optimizer.compile(program, **kwargs)
            published = self.optimizer.published if isinstance(self.optimizer, WeightOptimizer) else {}
            self.memo[key] = (result.deepcopy(), dict(published))
        else:
            logger.info("reusing the %s-step result for an identical input program", self.kind)
        result, published = self.memo[key]
        return result.deepcopy(), dict(published)


class _MemoWeights(_Memo, WeightOptimizer):
    """_Memo of a weight optimizer, itself a WeightOptimizer: the wrapped optimizer's backend, and as
    ``published`` the adapters of the compile whose result it returned (remembered or new)."""

    def __init__(self, optimizer: Any, kind: str, memo: dict[tuple[str, str], tuple[Any, dict[str, str]]]):
        if not isinstance(optimizer, WeightOptimizer):
            raise TypeError(f"_MemoWeights wraps a WeightOptimizer, got {type(optimizer).__name__}")
        super().__init__(optimizer, kind, memo)
        self.backend = optimizer.backend
        self.published: dict[str, str] = {}

    def compile(self, program: Any, **kwargs: Any) -> Any:
        result, self.published = self._compile(program, **kwargs)
        self.backend = self.optimizer.backend
        return result
