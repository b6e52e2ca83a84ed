"""``dspylite grpo configs/grpo.yaml [key=value ...]``: GRPO on a built-in task, end to end.

1. build (or reuse) the tiny model, unless ``model=`` names a checkpoint directory;
2. start vLLM with LoRA and runtime loading (or use ``server.api_base`` of a running one);
3. ``rl.trainer.GRPOTrainer`` on the task's program: dev score at the start, rollouts, LoRA updates,
   a new adapter version served each step, dev score every ``grpo.val_every`` steps and at the end;
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
from dspylite.run_dir import RunDir
from finetune.job import LMSettings, ServerSettings
from rl.config import GRPOConfig

logger = logging.getLogger(__name__)


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class GRPOTaskSettings:
    name: Literal["fact_qa", "fact_topic"] = field(
        default="fact_qa",
        metadata=_help(
            "Built-in task: fact_qa (two modules: extract the fact, then answer) or fact_topic (one module)."
        ),
    )
    seed: int = field(default=0, metadata=_help("Seed of the generated splits."))
    n_train: int = field(default=600, metadata=_help("Train examples rollouts draw from."))
    n_dev: int = field(
        default=300, metadata=_help("Held-out dev examples: the valset that picks the best version.")
    )
    reward: Literal["exact", "partial"] = field(
        default="exact",
        metadata=_help(
            "fact_qa rollout reward: exact (1 for the right answer) or partial (0.75 answer + 0.25 extracted fact). "
            "The dev score always uses the exact metric."
        ),
    )


@dataclass
class GRPOJobConfig:
    run_dir: str = field(default="runs/grpo", metadata=_help("Where everything this job writes goes."))
    model: str = field(
        default="", metadata=_help("Base model directory; empty: build (or reuse the cached) tiny model.")
    )
    task: GRPOTaskSettings = field(default_factory=GRPOTaskSettings, metadata=_help("The built-in task."))
    server: ServerSettings = field(default_factory=ServerSettings, metadata=_help("vLLM."))
    lm: LMSettings = field(
        default_factory=LMSettings,
        metadata=_help("The LM client: temperature is the dev-scoring one; rollouts use grpo.temperature."),
    )
    grpo: GRPOConfig = field(default_factory=GRPOConfig, metadata=_help("GRPO (rl.config.GRPOConfig)."))


def load_job_config(cfg_path: str | Path | None, overrides: list[str] | dict[str, Any] = ()) -> GRPOJobConfig:
    return load_config(GRPOJobConfig, cfg_path, overrides)


def run_grpo_job(
    cfg_path: str | Path | None, overrides: list[str] | dict[str, Any] = (), *, display_progress: bool = True
) -> Any:
    """Run the job described by ``cfg_path`` (+ ``key=value`` overrides); returns ``rl.trainer.GRPOResult``."""
    import dspylite
    from finetune.job import _model_dir, _server
    from rl.trainer import GRPOTrainer

    cfg = load_job_config(cfg_path, overrides)
    run = RunDir(cfg.run_dir)
    model_dir = _model_dir(cfg)
    cfg.grpo.model_path = str(model_dir)
    cfg.grpo.run_dir = str(run.path)
    if cfg.grpo.init_adapter in (None, ""):
        cfg.grpo.init_adapter = "base"  # the job's program starts unbound: nothing to inherit
    if cfg.grpo.lora.r > cfg.server.max_lora_rank:
        raise ConfigError(
            f"grpo.lora.r={cfg.grpo.lora.r} exceeds server.max_lora_rank={cfg.server.max_lora_rank}"
        )
    run.write_config(cfg)
    program, trainset, valset, reward, dev_metric = _task(cfg.task)

    with _server(cfg, model_dir, run) as server:
        lm = server.lm(
            temperature=cfg.lm.temperature, max_tokens=cfg.lm.max_tokens, cache_dir=str(run.path / "lm_cache")
        )
        with dspylite.context(lm=lm):
            trainer = GRPOTrainer(
                cfg.grpo, reward, server, lm=lm, val_metric=dev_metric, display_progress=display_progress
            )
            result = trainer.fit(program, trainset, valset)
    return result


def _task(task: GRPOTaskSettings) -> tuple[Any, list[Any], list[Any], Any, Any]:
    from dspylite import datasets
    from dspylite.datasets import programs

    if task.name == "fact_qa":
        data = datasets.load_fact_qa(seed=task.seed, n_train=task.n_train, n_dev=task.n_dev, n_test=0)
        reward = datasets.fact_qa_partial_metric if task.reward == "partial" else datasets.fact_qa_metric
        return programs.FactQA(), data["train"], data["dev"], reward, datasets.fact_qa_metric
    data = datasets.load_fact_topic(seed=task.seed, n_train=task.n_train, n_dev=task.n_dev, n_test=0)
    return (
        programs.FactTopic(),
        data["train"],
        data["dev"],
        datasets.fact_topic_metric,
        datasets.fact_topic_metric,
    )
