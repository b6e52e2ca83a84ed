"""``dspylite optimize configs/optimize.yaml``: a prompt optimizer (LabeledFewShot, BootstrapFewShot,
BootstrapFewShotWithRandomSearch or MIPROv2) compiles the program on the train split, selecting on dev;
baseline and optimized programs are then scored on dev and test (test is never selected on)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dspylite.config_io import load_config
from dspylite.errors import ConfigError
from dspylite.jobs.common import (
    JOB_FILE,
    LMSettings,
    Say,
    ServerSettings,
    describe_model,
    lm_usage,
    log_say,
    open_program_session,
    open_run,
    score_on_splits,
)
from dspylite.jobs.tasks import TaskSettings, load_task

logger = logging.getLogger(__name__)

OPTIMIZER_NAMES = {
    "labeled": "LabeledFewShot",
    "bootstrap": "BootstrapFewShot",
    "random_search": "BootstrapFewShotWithRandomSearch",
    "mipro": "MIPROv2",
}
OPTIMIZER_DIR = "optimizer"  # the optimizer's own run directory (trials, score cache, its report)


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class PromptOptimizerSettings:
    kind: Literal["labeled", "bootstrap", "random_search", "mipro"] = field(
        default="bootstrap",
        metadata=_help(
            "labeled (LabeledFewShot), bootstrap (BootstrapFewShot), random_search "
            "(BootstrapFewShotWithRandomSearch) or mipro (MIPROv2: instructions and demos)."
        ),
    )
    k: int = field(default=8, metadata=_help("labeled: demos per predictor."))
    max_bootstrapped_demos: int = field(
        default=4, metadata=_help("bootstrap/random_search/mipro: demos from the program's own passing runs.")
    )
    max_labeled_demos: int = field(
        default=4, metadata=_help("bootstrap/random_search/mipro: demos copied from the training labels.")
    )
    max_rounds: int = field(default=1, metadata=_help("Bootstrap passes over the trainset."))
    metric_threshold: float | None = field(
        default=None,
        metadata=_help("A teacher run passes when its score >= this (default: any truthy score)."),
    )
    num_candidate_programs: int = field(
        default=8, metadata=_help("random_search: candidate programs scored.")
    )
    auto: Literal["light", "medium", "heavy", "none"] = field(
        default="light",
        metadata=_help("mipro: search budget preset; none uses num_candidates and num_trials as given."),
    )
    num_candidates: int | None = field(
        default=None, metadata=_help("mipro: instruction/demo candidates per predictor.")
    )
    num_trials: int | None = field(default=None, metadata=_help("mipro: Bayesian-search trials."))
    minibatch: bool = field(default=True, metadata=_help("mipro: score trials on minibatches of the valset."))
    minibatch_size: int = field(default=35, metadata=_help("mipro: minibatch size."))
    max_lm_calls: int | None = field(
        default=None, metadata=_help("Stop optimizing after this many LM calls (None: no limit).")
    )
    seed: int = field(default=0, metadata=_help("Seed of demo sampling and search."))

    def __post_init__(self) -> None:
        if (
            self.kind == "mipro"
            and self.auto == "none"
            and (self.num_candidates is None or self.num_trials is None)
        ):
            raise ValueError("optimizer.auto=none needs optimizer.num_candidates and optimizer.num_trials")


def build_prompt_optimizer(
    settings: PromptOptimizerSettings, metric: Any, run_dir: str | Path, num_threads: int
) -> Any:
    """The configured prompt optimizer, writing its trials and report to ``run_dir``."""
    from dspylite import optimizers

    common: dict[str, Any] = {
        "run_dir": run_dir,
        "max_lm_calls": settings.max_lm_calls,
        "seed": settings.seed,
    }
    if settings.kind == "labeled":
        return optimizers.LabeledFewShot(k=settings.k, metric=metric, num_threads=num_threads, **common)
    demos = {
        "max_bootstrapped_demos": settings.max_bootstrapped_demos,
        "max_labeled_demos": settings.max_labeled_demos,
        "max_rounds": settings.max_rounds,
        "metric_threshold": settings.metric_threshold,
        "num_threads": num_threads,
    }
    if settings.kind == "bootstrap":
        return optimizers.BootstrapFewShot(metric=metric, **demos, **common)
    if settings.kind == "random_search":
        return optimizers.BootstrapFewShotWithRandomSearch(
            metric, num_candidate_programs=settings.num_candidate_programs, **demos, **common
        )
    if settings.kind == "mipro":
        return optimizers.MIPROv2(
            metric,
            auto=None if settings.auto == "none" else settings.auto,
            num_candidates=settings.num_candidates,
            num_trials=settings.num_trials,
            minibatch=settings.minibatch,
            minibatch_size=settings.minibatch_size,
            **demos,
            **common,
        )
    raise ConfigError(f"optimizer.kind={settings.kind!r} is not one of {sorted(OPTIMIZER_NAMES)}")


@dataclass
class OptimizeJobConfig:
    run_dir: str = field(default="runs/optimize", metadata=_help("Where everything this job writes goes."))
    model: str = field(
        default="",
        metadata=_help(
            "Base model directory vLLM serves; empty: the built-in tiny model. Unused with server.api_base."
        ),
    )
    program_path: str = field(
        default="",
        metadata=_help("A saved program.json to start from; empty: the task's program as written."),
    )
    task: TaskSettings = field(
        default_factory=TaskSettings, metadata=_help("The task: program, data, metric.")
    )
    server: ServerSettings = field(
        default_factory=ServerSettings, metadata=_help("vLLM or a running server.")
    )
    lm: LMSettings = field(default_factory=LMSettings, metadata=_help("The LM client."))
    optimizer: PromptOptimizerSettings = field(
        default_factory=PromptOptimizerSettings, metadata=_help("The prompt optimizer and its budget.")
    )


@dataclass
class OptimizeJobResult:
    run_dir: Path
    optimizer: str
    scores: dict[str, dict[str, dict[str, Any]]]  # program -> split -> score record
    seconds: float


def run_optimize_job(
    config: str | Path | None, overrides: list[str] | dict[str, Any] = (), *, say: Say = log_say
) -> OptimizeJobResult:
    from dspylite.jobs.report_job import render_report

    cfg = load_config(OptimizeJobConfig, config, overrides)
    task = load_task(cfg.task)
    trainset, devset = task.split("train"), task.split("dev")
    if not trainset:
        raise ConfigError("the task has no training examples (task.n_train / task.dataset)")
    run = open_run(cfg.run_dir, cfg, "optimize")
    name = OPTIMIZER_NAMES[cfg.optimizer.kind]
    started = time.perf_counter()
    with open_program_session(cfg.model, cfg.server, cfg.lm, run, task, cfg.program_path, say) as session:
        baseline = session.program
        optimizer = build_prompt_optimizer(
            cfg.optimizer, task.metric, run.path / OPTIMIZER_DIR, cfg.lm.num_threads
        )
        say(f"{name}: compiling on {len(trainset)} train examples, selecting on {len(devset)} dev ...")
        clock = time.perf_counter()
        optimized = optimizer.compile(baseline, trainset=trainset, valset=devset or None)
        compile_seconds = round(time.perf_counter() - clock, 1)
        optimized.save(run.program_path)
        run.log_metrics(phase="compile", optimizer=name, seconds=compile_seconds)
        scores = score_on_splits(
            {"baseline": baseline, "optimized": optimized}, task, run, cfg.lm.num_threads, say
        )
    seconds = round(time.perf_counter() - started, 1)
    run.save_json(
        JOB_FILE,
        {
            "kind": "optimize",
            "status": "done",
            "optimizer": name,
            "optimizer_settings": {"kind": cfg.optimizer.kind},
            "task": cfg.task.name,
            "model": describe_model(cfg.model, cfg.server),
            "program": type(baseline).__name__,
            "n_train": len(trainset),
            "scores": scores,
            "demos": {n: len(p.demos) for n, p in optimized.named_predictors()},
            "usage": lm_usage(session.lm),
            "seconds": {"compile": compile_seconds, "total": seconds},
        },
    )
    render_report(run.path)
    return OptimizeJobResult(run.path, name, scores, seconds)
