"""``majority``: the most common answer among several completions (self-consistency), as DSPy's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dspylite.evaluate.metrics import normalize_text
from dspylite.example import Completions, Prediction


def default_normalize(text: str) -> str | None:
    return normalize_text(text) or None


def majority(
    prediction_or_completions: Prediction | Completions | list,
    normalize: Callable[[Any], Any] | None = default_normalize,
    field: str | None = None,
) -> Prediction:
    """The first completion whose ``field`` (default: the last output field) has the most common
    normalized value; completions normalizing to None are not counted (unless all do); ties go to
    the earlier completion."""
    if isinstance(prediction_or_completions, Prediction):
        completions = list(prediction_or_completions.completions)
    elif isinstance(prediction_or_completions, (Completions, list)):
        completions = list(prediction_or_completions)
    else:
        raise TypeError(
            f"majority() takes a Prediction, Completions or list, got {type(prediction_or_completions).__name__}"
        )
    if not completions:
        raise ValueError("majority() needs at least one completion")
    completions = [c if isinstance(c, Prediction) else Prediction(**c) for c in completions]
    field = field or list(completions[0].keys())[-1]
    norm = normalize or (lambda value: value)
    values = [norm(c[field]) for c in completions]
    counted = [v for v in values if v is not None] or values
    counts: dict[Any, int] = {}
    for value in counted:
        counts[value] = counts.get(value, 0) + 1
    winner = max(counts, key=counts.get)  # max keeps the first of equal counts: earlier wins ties
    best = next(c for c, v in zip(completions, values, strict=True) if v == winner)
    return Prediction.from_completions([best.toDict()])


__all__ = ["default_normalize", "majority"]
