"""Feedback metrics for the built-in tasks: the score plus, in words, what went wrong.

They take DSPy's GEPA metric arguments ``(gold, pred, trace=None, pred_name=None, pred_trace=None)``
and return ``Prediction(score=..., feedback=...)``, so ``dspylite.GEPA`` (and ``dspy.GEPA``) can show a
reflection LM *why* a run failed: the wrong sentence copied, the output format broken, a value
garbled. The score is always the task's plain metric, so GEPA's numbers match ``Evaluate``'s.
With ``pred_name`` set, the feedback speaks to that predictor's own step.
"""

from __future__ import annotations

import difflib
from typing import Any

from dspylite.datasets.fact_qa import fact_match_metric, fact_qa_metric
from dspylite.datasets.fact_topic import TOPICS, fact_topic_metric
from dspylite.datasets.normalize import normalize_answer
from dspylite.example import Prediction

# A copy this similar to the gold sentence is the right sentence, garbled (not another sentence).
_GARBLED_SIMILARITY = 0.6


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    try:
        return obj.get(name) if hasattr(obj, "get") else getattr(obj, name, None)
    except Exception:  # an Example raises on odd keys; treat as missing
        return getattr(obj, name, None)


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, normalize_answer(a), normalize_answer(b)).ratio()


def describe_fact_copy(context: str, predicted: Any, gold: str) -> str:
    """One sentence on the copied fact: right, wrong sentence, garbled, or missing."""
    if predicted is None or not str(predicted).strip():
        return f"The fact step produced no fact (format broken or empty). The right sentence is: {gold!r}."
    predicted = str(predicted).strip()
    if normalize_answer(predicted) == normalize_answer(gold):
        return "The fact step copied the right sentence from the context."
    lines = [line.strip() for line in str(context or "").splitlines() if line.strip()]
    if normalize_answer(predicted) in {normalize_answer(line) for line in lines}:
        return (
            f"The fact step copied the wrong sentence: {predicted!r}. The right one is {gold!r}: it is the "
            "sentence about the person the question names AND the relation it asks about."
        )
    if _similarity(predicted, gold) >= _GARBLED_SIMILARITY:
        return (
            f"The fact step meant the right sentence but garbled it: {predicted!r} instead of {gold!r}. "
            "Copy the context line exactly, word for word."
        )
    return (
        f"The fact step wrote {predicted!r}, which is not a line of the context. "
        f"Copy one context line exactly; the right one is {gold!r}."
    )


def describe_answer(predicted: Any, gold: str) -> str:
    if predicted is None or not str(predicted).strip():
        return f"The answer step produced no answer (format broken or empty); the answer is {gold!r}."
    if normalize_answer(str(predicted)) == normalize_answer(gold):
        return "The answer is correct."
    if normalize_answer(gold) in normalize_answer(str(predicted)):
        return (
            f"The answer {str(predicted)!r} contains the right value {gold!r} but adds other words; "
            "give the value alone."
        )
    if _similarity(str(predicted), gold) >= _GARBLED_SIMILARITY:
        return f"The answer value is garbled: {str(predicted)!r} instead of {gold!r}."
    return f"The answer {str(predicted)!r} is wrong; the answer is {gold!r}."


def fact_qa_feedback_metric(
    gold: Any, pred: Any, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None
) -> Prediction:
    """``fact_qa_metric`` (answer exact match) with feedback on the fact copy and the answer.

    For the extract step (``pred_name`` containing "extract") only the copy is described; for the
    answer step, the answer plus whether it was given the right fact; otherwise both.
    """
    score = fact_qa_metric(gold, pred) if pred is not None else 0.0
    fact_note = describe_fact_copy(_get(gold, "context"), _get(pred, "fact"), str(_get(gold, "fact")))
    answer_note = describe_answer(_get(pred, "answer"), str(_get(gold, "answer")))
    if pred is None:
        feedback = "The program failed before producing outputs (format broken). " + fact_note
    elif pred_name and "extract" in pred_name:
        feedback = fact_note
    elif pred_name and "answer" in pred_name:
        right_fact = fact_match_metric(gold, pred) == 1.0
        feedback = answer_note + (
            "" if right_fact else " Note: this step was given a wrong fact by the previous step."
        )
    else:
        feedback = f"{fact_note} {answer_note}"
    return Prediction(score=score, feedback=feedback)


def fact_topic_feedback_metric(
    gold: Any, pred: Any, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None
) -> Prediction:
    """``fact_topic_metric`` with feedback: right, wrong topic, or not one of the allowed topics."""
    score = fact_topic_metric(gold, pred) if pred is not None else 0.0
    expected = str(_get(gold, "topic"))
    predicted = _get(pred, "topic")
    if predicted is None or not str(predicted).strip():
        feedback = f"No topic was produced (format broken); the topic is {expected!r}."
    elif score == 1.0:
        feedback = "The topic is correct."
    elif normalize_answer(str(predicted)) not in TOPICS:
        feedback = (
            f"{str(predicted)!r} is not one of the allowed topics {list(TOPICS)}; the topic is {expected!r}."
        )
    else:
        feedback = (
            f"Wrong topic {str(predicted)!r}; the sentence {_get(gold, 'sentence')!r} is about {expected!r}."
        )
    return Prediction(score=score, feedback=feedback)
