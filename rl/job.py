"""``dspylite grpo configs/grpo.yaml [key=value ...]``: GRPO on a task's program, end to end.

1. build (or reuse) the tiny model, unless ``model=`` names a checkpoint directory;
2. start vLLM with LoRA and runtime loading (or use ``server.api_base`` of a running one);
3. ``rl.trainer.GRPOTrainer`` on the task's program: dev score at the start, rollouts, LoRA updates,
   a new adapter version served each step, dev score every ``grpo.val_every`` steps and at the end;
   with a test split, the start and the best version are also scored on it (dev picked the best);
4. the run directory gets config, metrics.jsonl, tensorboard/, checkpoints/, adapters/, program.json,
   result.json, report.md and report.png. Re-running with the same run_dir resumes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dspylite.config_io import load_config
from dspylite.errors import ConfigError
from dspylite.jobs.common import LMSettings, ServerSettings
from dspylite.jobs.tasks import TaskSettings
from rl.config import GRPOConfig

logger = logging.getLogger(__name__)


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class GRPOJobConfig:
    run_dir: str = field(default="runs/grpo", metadata=_help("Where everything this job writes goes."))
    model: str = field(
        default="", metadata=_help("Base model directory; empty: build (or reuse the cached) tiny model.")
    )
    task: TaskSettings = field(
        default_factory=TaskSettings,
        metadata=_help(
            "The task: its program is trained, its train split feeds rollouts, its dev split picks the best version."
        ),
    )
    reward: Literal["metric", "partial", "copy"] = field(
        default="metric",
        metadata=_help(
            "Rollout reward: the task's metric; or, fact_qa only, partial (0.75 answer + 0.25 exact fact) or copy "
            "(0.6 answer + 0.2 exact fact + 0.2 for copying a context line whole). The dev score always uses the "
            "task's metric."
        ),
    )
    server: ServerSettings = field(default_factory=ServerSettings, metadata=_help("vLLM."))
    lm: LMSettings = field(
        default_factory=LMSettings,
        metadata=_help(
            "The LM client: temperature is the dev-scoring one (rollouts use grpo.temperature); max_tokens bounds "
            "every call unless grpo.max_tokens is set."
        ),
    )
    grpo: GRPOConfig = field(default_factory=GRPOConfig, metadata=_help("GRPO (rl.config.GRPOConfig)."))


def load_job_config(cfg_path: str | Path | None, overrides: list[str] | dict[str, Any] = ()) -> GRPOJobConfig:
    return load_config(GRPOJobConfig, cfg_path, overrides)


def run_grpo_job(
    cfg_path: str | Path | None, overrides: list[str] | dict[str, Any] = (), *, display_progress: bool = True
) -> Any:
    """Run the job described by ``cfg_path`` (+ ``key=value`` overrides); returns ``rl.trainer.GRPOResult``."""
    import dspylite
    from dspylite.jobs.common import make_adapter, make_lm, open_server, resolve_model
    from dspylite.jobs.tasks import load_task
    from dspylite.run_dir import RunDir
    from rl.trainer import GRPOTrainer

    cfg = load_job_config(cfg_path, overrides)
    if cfg.grpo.lora.r > cfg.server.max_lora_rank:
        raise ConfigError(
            f"grpo.lora.r={cfg.grpo.lora.r} exceeds server.max_lora_rank={cfg.server.max_lora_rank}"
        )
    task = load_task(cfg.task)
    reward = _reward(cfg, task)
    run = RunDir(cfg.run_dir)
    model_dir = resolve_model(cfg.model) if not cfg.server.api_base or cfg.model else ""
    cfg.grpo.run_dir = str(run.path)
    if cfg.grpo.init_adapter in (None, ""):
        cfg.grpo.init_adapter = "base"  # the job's program starts unbound: nothing to inherit
    run.write_config(cfg)

    with open_server(model_dir, cfg.server, run) as server:
        cfg.grpo.model_path = model_dir or str(server.base_model)
        lm = make_lm(server, cfg.lm, run)
        with dspylite.context(lm=lm, adapter=make_adapter(cfg.lm)):
            trainer = GRPOTrainer(
                cfg.grpo, reward, server, lm=lm, val_metric=task.metric, display_progress=display_progress
            )
            return trainer.fit(
                task.make_program(), task.split("train"), task.split("dev"), testset=task.split("test")
            )


def _reward(cfg: GRPOJobConfig, task: Any) -> Any:
    if cfg.reward == "metric":
        return task.metric
    if cfg.task.name != "fact_qa":
        raise ConfigError(f"reward={cfg.reward} is defined for task.name=fact_qa only, not {cfg.task.name!r}")
    from dspylite.datasets import fact_qa_copy_reward, fact_qa_partial_metric

    return fact_qa_partial_metric if cfg.reward == "partial" else fact_qa_copy_reward
