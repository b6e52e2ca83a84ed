"""GRPO: reinforcement learning of a whole program's LoRA weights against a running vLLM server.

    grpo = GRPO(metric, server=server, num_rollouts_per_example=4, examples_per_step=4, num_steps=10)
    tuned = grpo.compile(program, trainset=train, valset=val)
    grpo.result.start.score, grpo.result.best.score     # val metric before / after, with intervals

A thin front-end: the loop lives in ``rl.trainer.GRPOTrainer`` (rollouts, groups, the loss, adapter
versions hot-loaded into vLLM, checkpoints, metrics and the report). Every keyword is a field of
``rl.config.GRPOConfig``; ``config=`` passes a whole config instead (keywords then override it).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dspylite.errors import OptimizerError
from dspylite.example import Example

logger = logging.getLogger(__name__)


class GRPO:
    """Group Relative Policy Optimization over program rollouts, one shared LoRA adapter by default.

    ``server``: a ``serving.VLLMServer`` or ``serving.connection.connect(...)`` handle with runtime LoRA
    loading on. ``model_path``: the base model directory the server runs (default: what the server
    reports). ``init_adapter``: a LoRA directory to start from (e.g. BootstrapFinetune's), ``"base"``
    for a fresh LoRA, or None: the adapter the program is bound to when the server handle loaded it.
    ``lm``: the LM whose settings (endpoint, max_tokens) rollouts and validation use (default
    ``server.lm()``). ``valset``: when ``compile`` gets none, ``val_fraction`` of the trainset is held out.
    """

    def __init__(
        self,
        metric: Callable[..., Any],
        *,
        server: Any,
        model_path: str | None = None,
        num_rollouts_per_example: int | None = None,
        examples_per_step: int | None = None,
        num_steps: int | None = None,
        learning_rate: float | None = None,
        temperature: float | None = None,
        beta: float | None = None,
        epsilon: float | None = None,
        lora: Any = None,
        format_failure_reward: float | None = None,
        val_every: int | None = None,
        run_dir: str | Path | None = None,
        init_adapter: str | None = None,
        lm: Any = None,
        config: Any = None,
        val_fraction: float = 0.2,
        display_progress: bool = True,
        on_step_end: Callable[[int, dict[str, Any]], None] | None = None,
        registry: Any = None,
        colocation: Any = None,
        **options: Any,
    ):
        from rl.config import GRPOConfig

        if server is None:
            raise OptimizerError(
                "GRPO needs server=: a serving handle (VLLMServer or connect(...)) to sample from"
            )
        self.metric = metric
        self.server = server
        self.registry = registry
        self.colocation = colocation  # serving.colocate.Colocation around training phases (shared GPU)
        self.lm = lm
        self.val_fraction = val_fraction
        self.display_progress = display_progress
        self.on_step_end = on_step_end  # called with (step, metrics row) after each step's checkpoint
        self.published: dict[str, str] = {}
        # Every keyword that is given (not None) overrides ``config``; unset ones keep the config's
        # value, or GRPOConfig's default. Nothing is compared against defaults, so a keyword equal to
        # the default still wins over a config that says otherwise.
        given = {
            "num_rollouts_per_example": num_rollouts_per_example,
            "examples_per_step": examples_per_step,
            "num_steps": num_steps,
            "learning_rate": learning_rate,
            "temperature": temperature,
            "beta": beta,
            "epsilon": epsilon,
            "format_failure_reward": format_failure_reward,
            "val_every": val_every,
            "init_adapter": init_adapter,
            "model_path": str(model_path) if model_path is not None else None,
            "run_dir": str(run_dir) if run_dir is not None else None,
        }
        known = {f.name for f in dataclasses.fields(GRPOConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise OptimizerError(
                f"GRPO: unknown option(s) {unknown}; see rl.config.GRPOConfig for the fields"
            )
        fields = dataclasses.asdict(config) if config is not None else {}
        fields.update({k: v for k, v in given.items() if v is not None})
        fields.update(options)
        if lora is not None:
            fields["lora"] = dataclasses.asdict(lora) if dataclasses.is_dataclass(lora) else dict(lora)
        from dspylite.config_io import from_dict

        self.config: GRPOConfig = from_dict(GRPOConfig, fields, source="GRPO(...)")
        self.result: Any = None

    def compile(
        self, student: Any, *, trainset: Sequence[Example], valset: Sequence[Example] | None = None, **_: Any
    ) -> Any:
        """Train and return a copy of ``student`` bound to the best adapter version (``student`` is untouched)."""
        from rl.trainer import GRPOTrainer

        trainset = list(trainset)
        if not trainset:
            raise OptimizerError("GRPO.compile: the trainset is empty")
        if valset is None or len(valset) == 0:
            trainset, valset = _hold_out(trainset, self.val_fraction, self.config.seed)
            logger.warning(
                "GRPO: no valset given; holding out %d of the trainset's examples to pick the best adapter",
                len(valset),
            )
        cfg = dataclasses.replace(self.config)
        if not cfg.model_path:
            cfg.model_path = str(self.server.base_model)
        if not cfg.run_dir:
            cfg.run_dir = str(Path("runs") / f"grpo-{time.strftime('%Y%m%d-%H%M%S')}")
        trainer = GRPOTrainer(
            cfg,
            self.metric,
            self.server,
            lm=self.lm,
            display_progress=self.display_progress,
            on_step_end=self.on_step_end,
            registry=self.registry,
            colocation=self.colocation,
        )
        self.result = trainer.fit(student, trainset, list(valset))
        self.registry = trainer.registry
        # The seam BetterTogether and the jobs read: what this compile left served and bound.
        best_dir = self.result.best_adapter_dir
        self.published = {self.result.best_version: best_dir} if best_dir else {}
        return self.result.program


def _hold_out(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    if len(examples) < 2 or not 0 < fraction < 1:
        raise OptimizerError(
            f"GRPO: cannot hold out a valset from {len(examples)} example(s) "
            f"with val_fraction={fraction}; pass valset="
        )
    order = random.Random(f"grpo-holdout:{seed}").sample(range(len(examples)), len(examples))
    n_val = max(1, int(round(len(examples) * fraction)))
    val_idx = set(order[:n_val])
    return ([e for i, e in enumerate(examples) if i not in val_idx], [examples[i] for i in sorted(val_idx)])
