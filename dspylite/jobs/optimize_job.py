"""``dspylite optimize configs/optimize.yaml``: a prompt optimizer (``optimizer.kind``, a row of the
optimizer table ``dspylite.optimizers.table``) compiles the program on the train split, selecting on dev;
baseline and optimized programs are then scored on dev and test (test is never selected on)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspylite.config_io import field_help as _help
from dspylite.config_io import load_config
from dspylite.errors import ConfigError
from dspylite.jobs.report_job import OPTIMIZER_DIR  # the optimizer's own run directory
from dspylite.jobs.session import Say, log_say, open_session
from dspylite.jobs.settings import LMSettings, PromptOptimizerSettings
from dspylite.jobs.tasks import TaskSettings, load_task
from serving.config import ServerConfig


@dataclass
class OptimizeJobConfig:
    run_dir: str = field(default="runs/optimize", metadata=_help("Where everything this job writes goes."))
    model: str = field(
        default="",
        metadata=_help(
            "Base model vLLM serves: a checkpoint directory or a named source; empty: the built-in tiny "
            "model. Unused with server.api_base."
        ),
    )
    program_path: str = field(
        default="",
        metadata=_help("A saved program.json to start from; empty: the task's program as written."),
    )
    task: TaskSettings = field(
        default_factory=TaskSettings, metadata=_help("The task: program, data, metric.")
    )
    server: ServerConfig = field(default_factory=ServerConfig, metadata=_help("vLLM or a running server."))
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
    cfg = load_config(OptimizeJobConfig, config, overrides)
    task = load_task(cfg.task)
    trainset, devset = task.split("train"), task.split("dev")
    if not trainset:
        raise ConfigError("the task has no training examples (task.n_train / task.dataset)")
    name = cfg.optimizer.spec.name
    started = time.perf_counter()
    with open_session("optimize", cfg, say=say, task=task) as session:
        baseline = session.load_program(cfg.program_path)
        optimizer = session.prompt_optimizer(cfg.optimizer, session.run.path / OPTIMIZER_DIR)
        say(f"{name}: compiling on {len(trainset)} train examples, selecting on {len(devset)} dev ...")
        clock = time.perf_counter()
        optimized = optimizer.compile(baseline, trainset=trainset, valset=devset or None)
        compile_seconds = round(time.perf_counter() - clock, 1)
        optimized.save(session.run.program_path)
        session.run.log_metrics(phase="compile", optimizer=name, seconds=compile_seconds)
        scores = session.score_splits({"baseline": baseline, "optimized": optimized})
        seconds = round(time.perf_counter() - started, 1)
        session.finish(
            optimizer=name,
            optimizer_settings={"kind": cfg.optimizer.kind},
            program=type(baseline).__name__,
            n_train=len(trainset),
            scores=scores,
            demos={n: len(p.demos) for n, p in optimized.named_predictors()},
            seconds={"compile": compile_seconds, "total": seconds},
        )
    return OptimizeJobResult(session.run.path, name, scores, seconds)
