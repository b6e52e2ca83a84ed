"""Metrics for the public benchmarks (ASDiv, GSM8K: a number; BoolQ: yes or no; SST-2: positive or
negative), each as a plain
metric ``(example, prediction, trace=None) -> float`` and as a GEPA feedback metric
``(gold, pred, trace=None, pred_name=None, pred_trace=None) -> Prediction(score, feedback)`` whose
score is the plain metric's, so GEPA's numbers match ``Evaluate``'s.

The gold answer is the example's ``answer`` field (SST-2: ``sentiment``, True for positive); where the example carries the benchmark's own
worked solution (``gold_reasoning``, GSM8K), the feedback shows it to the reflection LM.
"""

from __future__ import annotations

from typing import Any

from dspylite.datasets.answers import numbers_match, parse_bool, parse_number
from dspylite.example import Prediction

# Feedback quotes at most this much of the model's answer text (a runaway string can be pages).
_QUOTE = 120


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    try:
        return obj.get(name) if hasattr(obj, "get") else getattr(obj, name, None)
    except Exception:  # an Example raises on odd keys; treat as missing
        return getattr(obj, name, None)


def _quote(value: Any) -> str:
    text = str(value)
    return repr(text if len(text) <= _QUOTE else text[:_QUOTE] + "...")


def _show(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def numeric_match(example: Any, prediction: Any, trace: Any = None) -> float:
    """1.0 when the predicted ``answer`` states the gold number ("1,234", 1234.0 and "$1234" all
    match 1234; a non-whole gold value also matches at two decimals), else 0.0."""
    return 1.0 if numbers_match(_get(prediction, "answer"), _get(example, "answer")) else 0.0


def boolean_match(example: Any, prediction: Any, trace: Any = None) -> float:
    """1.0 when the predicted ``answer`` is the gold yes/no value (a bool, or text starting with
    yes/no/true/false), else 0.0."""
    got, want = parse_bool(_get(prediction, "answer")), parse_bool(_get(example, "answer"))
    return 1.0 if got is not None and got == want else 0.0


def numeric_feedback_metric(
    gold: Any, pred: Any, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None
) -> Prediction:
    """``numeric_match`` with feedback: right, no number given, or wrong (with the gold number, and
    the benchmark's worked solution where the example has one)."""
    score = numeric_match(gold, pred) if pred is not None else 0.0
    want = parse_number(_get(gold, "answer"))
    expected = _show(want) if want is not None else str(_get(gold, "answer"))
    answer = _get(pred, "answer")
    got = parse_number(answer)
    if pred is None:
        feedback = f"The program failed before giving an answer (format broken); the answer is {expected}."
    elif score == 1.0:
        feedback = f"Correct: the answer is {expected}."
    elif got is None:
        feedback = (
            f"The answer {_quote(answer)} states no number; give the final answer as a number alone. "
            f"The answer is {expected}."
        )
    else:
        feedback = f"The answer {_show(got)} is wrong; the correct answer is {expected}."
    solution = _get(gold, "gold_reasoning")
    if score < 1.0 and solution:
        feedback += f" A correct solution: {solution}"
    return Prediction(score=score, feedback=feedback)


def boolean_feedback_metric(
    gold: Any, pred: Any, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None
) -> Prediction:
    """``boolean_match`` with feedback: right, not a yes/no answer, or the opposite of the gold one."""
    score = boolean_match(gold, pred) if pred is not None else 0.0
    want = parse_bool(_get(gold, "answer"))
    answer = _get(pred, "answer")
    got = parse_bool(answer)
    if pred is None:
        feedback = f"The program failed before giving an answer (format broken); the answer is {want}."
    elif score == 1.0:
        feedback = f"Correct: the answer is {want}."
    elif got is None:
        feedback = f"The answer {_quote(answer)} is neither true nor false; the answer is {want}."
    else:
        feedback = (
            f"The answer {got} is wrong: by the passage, the answer to {_quote(_get(gold, 'question'))} "
            f"is {want}."
        )
    return Prediction(score=score, feedback=feedback)


def sentiment_match(example: Any, prediction: Any, trace: Any = None) -> float:
    """1.0 when the predicted ``sentiment`` is the gold one (True/"positive" vs False/"negative"), else 0.0."""
    got, want = parse_sentiment(_get(prediction, "sentiment")), parse_sentiment(_get(example, "sentiment"))
    return 1.0 if got is not None and got == want else 0.0


def parse_sentiment(value: Any) -> bool | None:
    """True for positive, False for negative: a bool, "positive"/"negative", or yes/no/true/false text."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text.startswith("pos"):
            return True
        if text.startswith("neg"):
            return False
    return parse_bool(value)


def sentiment_feedback_metric(
    gold: Any, pred: Any, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None
) -> Prediction:
    """``sentiment_match`` with feedback: right, not a sentiment, or the opposite of the gold one."""
    score = sentiment_match(gold, pred) if pred is not None else 0.0
    want = "positive (true)" if parse_sentiment(_get(gold, "sentiment")) else "negative (false)"
    answer = _get(pred, "sentiment")
    if pred is None:
        feedback = f"The program failed before giving an answer (format broken); the sentiment is {want}."
    elif score == 1.0:
        feedback = f"Correct: the sentiment is {want}."
    elif parse_sentiment(answer) is None:
        feedback = f"The answer {_quote(answer)} is neither positive nor negative; the sentiment is {want}."
    else:
        feedback = f"Wrong: the sentence {_quote(_get(gold, 'sentence'))} is {want}."
    return Prediction(score=score, feedback=feedback)
