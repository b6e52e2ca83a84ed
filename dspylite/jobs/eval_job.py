"""``dspylite eval configs/eval.yaml``: score a program (built-in or yours, optionally a saved program.json)
on one split, with a 95% interval, per-example results and error counts."""

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
    RESULTS_FILE,
    LMSettings,
    Say,
    ServerSettings,
    describe_model,
    evaluate,
    lm_usage,
    log_say,
    open_program_session,
    open_run,
    score_record,
    write_results,
)
from dspylite.jobs.tasks import TaskSettings, load_task

logger = logging.getLogger(__name__)


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class EvalJobConfig:
    run_dir: str = field(default="runs/eval", metadata=_help("Where everything this job writes goes."))
    model: str = field(
        default="",
        metadata=_help(
            "Base model directory vLLM serves; empty: the built-in tiny model. Unused with server.api_base."
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
    server: ServerSettings = field(
        default_factory=ServerSettings, metadata=_help("vLLM or a running server.")
    )
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
    from dspylite.jobs.report_job import render_report

    cfg = load_config(EvalJobConfig, config, overrides)
    task = load_task(cfg.task)
    examples = task.split(cfg.split)
    if not examples:
        raise ConfigError(f"split={cfg.split!r} holds no examples for task {cfg.task.name!r}")
    run = open_run(cfg.run_dir, cfg, "eval")
    started = time.perf_counter()
    with open_program_session(cfg.model, cfg.server, cfg.lm, run, task, cfg.program_path, say) as session:
        program = session.program
        say(f"scoring {type(program).__name__} on {len(examples)} {cfg.split} examples ...")
        result = evaluate(program, examples, task.metric, cfg.lm.num_threads)
        program.save(run.program_path)
    seconds = round(time.perf_counter() - started, 1)
    record = score_record(result)
    usage = lm_usage(session.lm)
    run.log_metrics(phase="eval", split=cfg.split, **result.summary(), usage=usage, seconds=seconds)
    write_results(run, RESULTS_FILE, result)
    run.save_json(
        JOB_FILE,
        {
            "kind": "eval",
            "status": "done",
            "task": cfg.task.name,
            "model": describe_model(cfg.model, cfg.server),
            "program": type(program).__name__,
            "program_path": cfg.program_path,
            "split": cfg.split,
            "score": record,
            "usage": usage,
            "seconds": seconds,
        },
    )
    render_report(run.path)
    return EvalJobResult(run.path, cfg.split, record, seconds)
