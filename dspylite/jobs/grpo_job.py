"""``dspylite grpo configs/grpo.yaml``: GRPO on a task's program, end to end.

1. serve the base model (``model``: a checkpoint directory or a named source; default the tiny model)
   with LoRA and runtime loading on, or use ``server.api_base``;
2. ``rl.trainer.GRPOTrainer`` on the task's program: dev score at the start, rollouts, LoRA updates,
   a new adapter version published each step, dev score every ``grpo.val_every`` steps and at the end;
   with a test split, the start and the best version are also scored on it (dev picked the best);
3. the run directory gets config, metrics.jsonl, tensorboard/, checkpoints/, adapters/, program.json,
   result.json, report.md and report.png. Re-running with the same run_dir resumes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dspylite.config_io import field_help as _help
from dspylite.config_io import load_config
from dspylite.errors import ConfigError
from dspylite.jobs.session import Say, log_say, open_session
from dspylite.jobs.settings import LMSettings
from dspylite.jobs.tasks import TaskSettings, load_task
from rl.config import GRPOConfig
from serving.config import ServerConfig


@dataclass
class GRPOJobConfig:
    run_dir: str = field(default="runs/grpo", metadata=_help("Where everything this job writes goes."))
    model: str = field(
        default="",
        metadata=_help(
            "Base model: a checkpoint directory or a named source; empty: the built-in tiny model."
        ),
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
    server: ServerConfig = field(default_factory=ServerConfig, metadata=_help("vLLM."))
    lm: LMSettings = field(
        default_factory=LMSettings,
        metadata=_help(
            "The LM client: temperature is the dev-scoring one (rollouts use grpo.temperature); max_tokens bounds "
            "every call unless grpo.max_tokens is set."
        ),
    )
    grpo: GRPOConfig = field(default_factory=GRPOConfig, metadata=_help("GRPO (rl.config.GRPOConfig)."))

    def __post_init__(self) -> None:
        self.server.check_lora_ranks(grpo=self.grpo.lora.r)


def run_grpo_job(
    config: str | Path | None,
    overrides: list[str] | dict[str, Any] = (),
    *,
    say: Say = log_say,
    display_progress: bool = True,
) -> Any:
    """Run the job described by ``config`` (+ ``key=value`` overrides); returns ``rl.trainer.GRPOResult``.

    Under ``accelerate launch`` rank 0 runs it and the other ranks only join the policy updates
    (``rl.distributed``); they return None."""
    from rl import distributed
    from rl.trainer import GRPOTrainer

    cfg = load_config(GRPOJobConfig, config, overrides)
    # The job's program starts unbound: with no init_adapter there is nothing to inherit, so a fresh LoRA.
    grpo = dataclasses.replace(cfg.grpo, init_adapter=cfg.grpo.init_adapter or "base")
    if distributed.launched_world_size() > 1:  # under `accelerate launch`: rank 0 runs the job
        distributed.check_launch(grpo, distributed.launched_world_size())
        if distributed.launched_rank() != 0:
            from serving.devices import use_training_devices

            use_training_devices(cfg.server.train_devices or None)  # the GPUs rank 0 trains on too
            distributed.run_worker(grpo)  # joins rank 0's policy updates until it stops
            return None
    task = load_task(cfg.task)
    reward = _reward(cfg, task)
    with open_session("grpo", cfg, say=say, task=task) as session:
        # After the session applied server.train_devices; a no-op in a single process.
        distributed.init_from_env(grpo)
        try:
            trainer = GRPOTrainer(
                grpo, reward, session.backend, val_metric=task.metric, display_progress=display_progress
            )
            result = trainer.fit(
                task.make_program(), task.split("train"), task.split("dev"), testset=task.split("test")
            )
        finally:
            distributed.stop_workers()
        session.finish(render=False, best_version=result.best_version)  # the trainer wrote its report
    return result


def _reward(cfg: GRPOJobConfig, task: Any) -> Any:
    if cfg.reward == "metric":
        return task.metric
    if cfg.task.name != "fact_qa":
        raise ConfigError(f"reward={cfg.reward} is defined for task.name=fact_qa only, not {cfg.task.name!r}")
    from dspylite.datasets import fact_qa_copy_reward, fact_qa_partial_metric

    return fact_qa_partial_metric if cfg.reward == "partial" else fact_qa_copy_reward
