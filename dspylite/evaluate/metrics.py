"""DSPy's ready-made metrics with DSPy's semantics (``dspy.evaluate.metrics``).

``answer_exact_match(example, pred, trace=None, frac=1.0)`` compares ``pred.answer`` with
``example.answer`` (a string or a list of accepted strings) after SQuAD-style normalization;
``frac < 1`` accepts a token F1 of at least ``frac``. ``answer_passage_match`` asks whether any of
``pred.context``'s passages contains the answer as a whole-token run.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from typing import Any

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_text(text: str) -> str:
    """Unicode NFD, lowercase, drop punctuation and English articles, collapse whitespace."""
    text = unicodedata.normalize("NFD", text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def em_score(prediction: str, ground_truth: str) -> bool:
    return normalize_text(prediction) == normalize_text(ground_truth)


def f1_score(prediction: str, ground_truth: str) -> float:
    predicted = normalize_text(prediction).split()
    expected = normalize_text(ground_truth).split()
    same = sum((Counter(predicted) & Counter(expected)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return 2 * precision * recall / (precision + recall)


def _check_answers(answers: Any) -> list[str]:
    if not isinstance(answers, list):
        raise ValueError(f"`answers_list` must be a list, got {type(answers)}")
    return answers


def EM(prediction: str, answers_list: list[str]) -> bool:  # noqa: N802 - DSPy's name
    """True when the prediction equals any reference answer after normalization."""
    return max(em_score(prediction, answer) for answer in _check_answers(answers_list))


def F1(prediction: str, answers_list: list[str]) -> float:  # noqa: N802 - DSPy's name
    """The best token-level F1 of the prediction against the reference answers."""
    return max(f1_score(prediction, answer) for answer in _check_answers(answers_list))


def _answers(example: Any) -> list[str]:
    answer = example.answer
    return [answer] if isinstance(answer, str) else list(answer)


def answer_exact_match(example: Any, pred: Any, trace: Any = None, frac: float = 1.0) -> bool:
    """``pred.answer`` matches ``example.answer`` (exactly, or with token F1 >= ``frac`` when frac < 1)."""
    answers = _answers(example)
    if frac >= 1.0:
        return EM(pred.answer, answers)
    return F1(pred.answer, answers) >= frac


def _tokens(text: str) -> list[str]:
    # Normalized text has no punctuation, so whitespace tokens are whole words.
    return normalize_text(text).split()


def _contains_run(haystack: list[str], needle: list[str]) -> bool:
    width = len(needle)
    return any(haystack[i : i + width] == needle for i in range(len(haystack) - width + 1))


def passage_match(passages: list[str], answers: list[str]) -> bool:
    """True when any passage contains any answer as a contiguous run of normalized tokens."""
    wanted = [_tokens(answer) for answer in answers]
    return any(_contains_run(_tokens(passage), tokens) for passage in passages for tokens in wanted)


def answer_passage_match(example: Any, pred: Any, trace: Any = None) -> bool:
    """Any passage in ``pred.context`` contains ``example.answer`` (or one of its answers)."""
    return passage_match(pred.context, _answers(example))


__all__ = [
    "EM",
    "F1",
    "answer_exact_match",
    "answer_passage_match",
    "em_score",
    "f1_score",
    "normalize_text",
    "passage_match",
]
