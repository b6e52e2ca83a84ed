"""Evaluation: ``Evaluate`` (parallel scoring of a program on a dev set) and DSPy's metrics.

A package, like ``dspy.evaluate``: ``dspylite.evaluate.evaluate`` holds ``Evaluate`` and
``dspylite.evaluate.metrics`` the ready-made metrics (``answer_exact_match``, ...).
"""

from dspylite.evaluate.evaluate import (
    Evaluate,
    EvaluationResult,
    ExampleResult,
    Metric,
    check_score,
    example_id,
    run_one,
)
from dspylite.evaluate.metrics import (
    EM,
    answer_exact_match,
    answer_passage_match,
    normalize_text,
)

__all__ = [
    "EM",
    "Evaluate",
    "EvaluationResult",
    "ExampleResult",
    "Metric",
    "answer_exact_match",
    "answer_passage_match",
    "check_score",
    "example_id",
    "normalize_text",
    "run_one",
]
