"""DSPy path ``dspy.teleprompt.utils``: evaluating candidate programs inside optimizers."""

from __future__ import annotations

import logging
import random
from typing import Any

from dspylite.example import Prediction

logger = logging.getLogger(__name__)


def create_minibatch(
    trainset: list[Any], batch_size: int = 50, rng: random.Random | None = None
) -> list[Any]:
    """``batch_size`` examples drawn from ``trainset`` (without replacement)."""
    rng = rng or random
    return rng.sample(trainset, min(batch_size, len(trainset)))


def eval_candidate_program(
    batch_size: int,
    trainset: list[Any],
    candidate_program: Any,
    evaluate: Any,
    rng: random.Random | None = None,
) -> Any:
    """Score ``candidate_program`` with ``evaluate`` on ``trainset`` (a random minibatch when it holds
    more than ``batch_size`` examples). An evaluation that raises scores 0.0 (logged with its traceback),
    so one failing candidate does not end the search."""
    try:
        if batch_size >= len(trainset):
            return evaluate(candidate_program, devset=trainset, callback_metadata={"metric_key": "eval_full"})
        return evaluate(
            candidate_program,
            devset=create_minibatch(trainset, batch_size, rng),
            callback_metadata={"metric_key": "eval_minibatch"},
        )
    except Exception:
        logger.error("An exception occurred during evaluation", exc_info=True)
        return Prediction(score=0.0, results=[])


__all__ = ["create_minibatch", "eval_candidate_program"]
