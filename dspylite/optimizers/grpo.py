"""GRPO: reinforcement learning of a whole program's LoRA weights against a running vLLM server.

    backend = Backend.connect("http://localhost:8000/v1", run_dir="runs/grpo")
    grpo = GRPO(metric, backend, GRPOConfig(num_rollouts_per_example=4, examples_per_step=4, num_steps=10))
    tuned = grpo.compile(program, trainset=train, valset=val)
    grpo.result.start.score, grpo.result.best.score     # val metric before / after, with intervals

A thin front-end: the loop lives in ``rl.trainer.GRPOTrainer`` (rollouts, groups, the loss, adapter
versions published through the backend, checkpoints, metrics and the report).
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dspylite.errors import OptimizerError
from dspylite.example import Example
from dspylite.optimizers.weights import WeightOptimizer, find_backend

if TYPE_CHECKING:
    from rl.config import GRPOConfig
    from serving.backend import Backend

logger = logging.getLogger(__name__)


class GRPO(WeightOptimizer):
    """Group Relative Policy Optimization over program rollouts, one shared LoRA adapter by default.

    Args:
        metric: the reward, ``metric(example, prediction, trace=None) -> float``.
        backend: the ``serving.backend.Backend`` rollouts sample from and versions are published to
            (its server needs runtime LoRA loading), or an LM carrying one (``backend.lm()``); None:
            found at compile on the program's or the configured LM (``find_backend``).
        config: an ``rl.config.GRPOConfig`` (default: its measured recipe); ``init_adapter`` there is
            a LoRA directory to start from (e.g. BootstrapFinetune's), ``"base"``, or None: the
            adapter the program is bound to when the server loaded it through this process.
        train_kwargs: GRPOConfig fields that override ``config`` (DSPy's name), e.g.
            ``{"num_steps": 20, "learning_rate": 1e-4}``.
        val_fraction: share of the trainset held out to pick the best version when compile gets no valset.
        display_progress: show a progress bar over the steps.
        on_step_end: called with (step, metrics row) after each step's checkpoint.
    """

    def __init__(
        self,
        metric: Callable[..., Any],
        backend: Backend | Any = None,
        config: GRPOConfig | None = None,
        *,
        train_kwargs: dict[str, Any] | None = None,
        val_fraction: float = 0.2,
        display_progress: bool = True,
        on_step_end: Callable[[int, dict[str, Any]], None] | None = None,
    ):
        from dspylite.config_io import from_dict, to_dict
        from rl.config import GRPOConfig
        from serving.backend import Backend

        if not callable(metric):
            raise OptimizerError(f"GRPO needs a metric (the reward) function, got {metric!r}")
        if config is not None and not isinstance(config, GRPOConfig):
            raise OptimizerError(f"GRPO: config= takes an rl.config.GRPOConfig, got {type(config).__name__}")
        self.metric = metric
        self._backend_or_lm = backend
        # Known now when given; else found at compile (on the LM).
        self.backend = backend if isinstance(backend, Backend) else None
        self.val_fraction = val_fraction
        self.display_progress = display_progress
        self.on_step_end = on_step_end
        self.published: dict[str, str] = {}
        # train_kwargs override the config field by field (a nested lora mapping keeps the config's
        # other LoRA settings); a key GRPOConfig lacks is an error naming it (config_io).
        fields = to_dict(config if config is not None else GRPOConfig())
        for key, value in (train_kwargs or {}).items():
            if isinstance(value, dict) and isinstance(fields.get(key), dict):
                fields[key] = {**fields[key], **value}
            else:
                fields[key] = to_dict(value) if dataclasses.is_dataclass(value) else value
        self.config: GRPOConfig = from_dict(GRPOConfig, fields, source="GRPO(train_kwargs=...)")
        self.result: Any = None

    def compile(
        self,
        student: Any,
        *,
        trainset: Sequence[Example],
        teacher: Any = None,
        valset: Sequence[Example] | None = None,
        **_: Any,
    ) -> Any:
        """Train and return a copy of ``student`` bound to the best adapter version (``student`` is untouched)."""
        from rl.trainer import GRPOTrainer

        trainset = list(trainset)
        if not trainset:
            raise OptimizerError("GRPO.compile: the trainset is empty")
        if teacher is not None:
            raise OptimizerError("GRPO.compile: teacher= is not supported; GRPO learns from its own rollouts")
        self.backend = find_backend(self._backend_or_lm, student, "GRPO").with_run_dir("grpo")
        if valset is None or len(valset) == 0:
            trainset, valset = _hold_out(trainset, self.val_fraction, self.config.seed)
            logger.warning(
                "GRPO: no valset given; holding out %d of the trainset's examples to pick the best adapter",
                len(valset),
            )
        trainer = GRPOTrainer(
            dataclasses.replace(self.config),  # the trainer may adjust its copy (tensorboard missing)
            self.metric,
            self.backend,
            display_progress=self.display_progress,
            on_step_end=self.on_step_end,
        )
        self.result = trainer.fit(student, trainset, list(valset))
        # What BetterTogether and the jobs read: what this compile left served and bound.
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
