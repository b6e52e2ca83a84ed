"""Signature behaviour DSPy code relies on: field metadata, constraints, union spelling, records.

Written against DSPy's public API (its ``dspy.signatures.field`` and ``Signature``), not its tests.
"""

from __future__ import annotations

from typing import Optional, Union

import pytest

import dspylite as dspy
from dspylite.adapters import ChatAdapter
from dspylite.errors import InputError, SignatureError, UndeclaredFieldError


class Review(dspy.Signature):
    """Rate a review."""

    text: str = dspy.InputField(desc="the review")
    stars: int = dspy.OutputField(ge=1, le=5)
    summary: str = dspy.OutputField(prefix="Short:", min_length=3)


def test_json_schema_extra_carries_kind_desc_and_prefix():
    extra = Review.input_fields["text"].json_schema_extra
    assert extra == {"__dspy_field_type": "input", "desc": "the review", "prefix": "Text:"}
    # No description: DSPy's "${name}" placeholder; an explicit prefix is kept.
    assert Review.output_fields["stars"].json_schema_extra["desc"] == "${stars}"
    assert Review.output_fields["summary"].json_schema_extra["prefix"] == "Short:"


def test_with_updated_fields_changes_only_the_named_field():
    updated = Review.with_updated_fields("text", prefix="Review:")
    assert updated.input_fields["text"].json_schema_extra["prefix"] == "Review:"
    assert Review.input_fields["text"].json_schema_extra["prefix"] == "Text:"


def test_constraints_use_dspy_wording_and_reach_the_prompt():
    assert Review.output_fields["stars"].json_schema_extra["constraints"] == (
        "greater than or equal to: 1, less than or equal to: 5"
    )
    assert Review.output_fields["summary"].constraints == "minimum length: 3"
    assert "constraints" not in Review.input_fields["text"].json_schema_extra
    system = ChatAdapter().format_system_message(Review)
    assert "1. `stars` (int): \nConstraints: greater than or equal to: 1, less than or equal to: 5" in system
    # append/prepend keep a new field's constraints too.
    extended = Review.append("score", dspy.OutputField(lt=10), float)
    assert extended.output_fields["score"].constraints == "less than: 10"


def test_pydantic_description_stands_in_for_desc():
    sig = dspy.Signature({"q": dspy.InputField(description="a question"), "a": dspy.OutputField()})
    assert sig.input_fields["q"].desc == "a question"


def test_annotated_attribute_without_field_is_a_type_error_like_dspy():
    with pytest.raises(TypeError) as info:

        class Broken(dspy.Signature):
            question: str

    assert isinstance(info.value, UndeclaredFieldError)
    assert isinstance(info.value, SignatureError)


def test_duplicate_names_across_inputs_and_outputs_say_distinct_names():
    with pytest.raises(SignatureError, match="distinct names"):
        dspy.Signature("value -> value")


def test_pep604_unions_name_the_same_type_as_typing_unions():
    class New(dspy.Signature):
        question: str | None = dspy.InputField()
        answer: int | str = dspy.OutputField()

    class Old(dspy.Signature):
        question: Optional[str] = dspy.InputField()  # noqa: UP045 - the point of the test
        answer: Union[int, str] = dspy.OutputField()  # noqa: UP007 - the point of the test

    assert New.equals(Old)
    assert New.input_fields["question"].type_name == "Optional[str]"
    assert New.output_fields["answer"].type_name == "Union[int, str]"
    # The annotation itself is kept as written.
    assert New.output_fields["answer"].annotation == int | str


def test_signature_instantiates_as_a_record_of_its_fields():
    QA = dspy.Signature("question -> answer")
    record = QA(question="1+1?", answer="2")
    assert isinstance(record, QA)
    assert (record.question, record.answer) == ("1+1?", "2")
    with pytest.raises(InputError, match="missing fields \\['answer'\\]"):
        QA(question="1+1?")
    with pytest.raises(InputError, match="unknown fields \\['extra'\\]"):
        QA(question="q", answer="a", extra=1)
    with pytest.raises(TypeError):
        QA(1)
