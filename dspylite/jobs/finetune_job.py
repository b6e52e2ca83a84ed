"""``dspylite finetune configs/sft.yaml``: BootstrapFinetune on a task, end to end.

1. serve the base model (``model``: a checkpoint directory or a named source; default the tiny model)
   with LoRA enabled, or use ``server.api_base``;
2. score the task's program on dev (and test, when the task has one): the baseline;
3. BootstrapFinetune: teacher runs on the train split, SFT rows from the passing traces, LoRA training
   (TRL + PEFT), the adapter published into the server and bound to a copy of the program;
4. score the tuned program on the same examples; report.md (scores, paired differences, data card,
   training metrics) and report.png in the run directory.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspylite.config_io import field_help as _help
from dspylite.config_io import load_config
from dspylite.errors import ConfigError
from dspylite.jobs.session import Say, log_say, open_session
from dspylite.jobs.settings import BootstrapSettings, LMSettings
from dspylite.jobs.tasks import TaskSettings, load_task
from finetune.config import FinetuneConfig
from serving.config import ServerConfig

logger = logging.getLogger(__name__)

MIN_HELD_OUT = 200  # the smallest dev split whose interval is worth reporting


@dataclass
class FinetuneJobConfig:
    run_dir: str = field(default="runs/sft", metadata=_help("Where everything this job writes goes."))
    model: str = field(
        default="",
        metadata=_help(
            "Base model: a checkpoint directory or a named source; empty: the built-in tiny model."
        ),
    )
    program_path: str = field(
        default="",
        metadata=_help("A saved program.json to start from; empty: the task's program as written."),
    )
    task: TaskSettings = field(
        default_factory=TaskSettings, metadata=_help("The task: program, data, metric.")
    )
    server: ServerConfig = field(default_factory=ServerConfig, metadata=_help("vLLM (LoRA enabled)."))
    lm: LMSettings = field(
        default_factory=LMSettings, metadata=_help("The LM client (teacher runs and scoring).")
    )
    bootstrap: BootstrapSettings = field(
        default_factory=BootstrapSettings, metadata=_help("Trace collection.")
    )
    sft: FinetuneConfig = field(default_factory=FinetuneConfig, metadata=_help("LoRA SFT (finetune.config)."))

    def __post_init__(self) -> None:
        self.server.check_lora_ranks(sft=self.sft.lora.r)


@dataclass
class FinetuneJobResult:
    run_dir: Path
    adapter: str
    scores: dict[str, dict[str, dict[str, Any]]]  # "baseline" | "tuned" -> split -> score record
    seconds: dict[str, float]


def run_finetune_job(
    config: str | Path | None, overrides: list[str] | dict[str, Any] = (), *, say: Say = log_say
) -> FinetuneJobResult:
    cfg = load_config(FinetuneJobConfig, config, overrides)
    task = load_task(cfg.task)
    if not task.split("train"):
        raise ConfigError("the task has no training examples (task.n_train / task.dataset)")
    if 0 < len(task.split("dev")) < MIN_HELD_OUT:
        logger.warning(
            "task.n_dev=%d is below %d held-out examples; the interval will be wide",
            cfg.task.n_dev,
            MIN_HELD_OUT,
        )
    seconds: dict[str, float] = {}
    with open_session("finetune", cfg, say=say, task=task) as session:
        baseline = session.load_program(cfg.program_path)
        optimizer = session.bootstrap_finetune(cfg.bootstrap, cfg.sft, session.run.path)
        clock = time.perf_counter()
        tuned = optimizer.compile(baseline, trainset=task.split("train"))
        seconds["bootstrap_finetune"] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()
        scores = session.score_splits({"baseline": baseline, "tuned": tuned})
        seconds["eval"] = round(time.perf_counter() - clock, 1)
        outcome = optimizer.outcome
        adapter = next(iter(outcome.adapters))
        session.finish(
            program=type(baseline).__name__,
            adapter=adapter,
            adapters=outcome.adapters,
            scores=scores,
            data_card=outcome.data_card,
            train_metrics=outcome.train_metrics.get(adapter, {}),
            lora={"r": cfg.sft.lora.r, "target_modules": cfg.sft.lora.target_modules},
            seconds={**seconds, **outcome.seconds},
        )
    return FinetuneJobResult(session.run.path, adapter, scores, {**seconds, **outcome.seconds})
