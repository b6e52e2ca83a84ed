"""Signatures (class and string forms, types, editing, immutability), Example and Prediction."""

from __future__ import annotations

import enum
from typing import Any, Literal, Optional

import pydantic
import pytest

import dspylite as dspy
from dspylite.errors import InputError, SignatureError
from dspylite.example import Example, Prediction
from dspylite.signatures import make_signature


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(pydantic.BaseModel):
    x: int
    y: int


class QA(dspy.Signature):
    """Answer the question from the context."""

    context: list[str] = dspy.InputField(desc="relevant facts")
    question: str = dspy.InputField()
    answer: int = dspy.OutputField(desc="a whole number")


# ---- class form -----------------------------------------------------------------------------------


def test_class_form_reads_docstring_fields_types_and_descriptions():
    assert QA.instructions == "Answer the question from the context."
    assert list(QA.input_fields) == ["context", "question"]
    assert list(QA.output_fields) == ["answer"]
    assert QA.fields["context"].annotation == list[str]
    assert QA.fields["context"].desc == "relevant facts"
    assert QA.fields["answer"].annotation is int
    assert QA.fields["question"].prefix == "Question:"
    assert QA.signature == "context, question -> answer"


def test_class_form_supports_every_declared_type():
    class AllTypes(dspy.Signature):
        text: str = dspy.InputField()
        count: int = dspy.OutputField()
        ratio: float = dspy.OutputField()
        flag: bool = dspy.OutputField()
        label: Literal["yes", "no"] = dspy.OutputField()
        color: Color = dspy.OutputField()
        tags: list[str] = dspy.OutputField()
        scores: dict[str, float] = dspy.OutputField()
        maybe: Optional[int] = dspy.OutputField()
        point: Point = dspy.OutputField()

    types = {name: f.annotation for name, f in AllTypes.output_fields.items()}
    assert types == {
        "count": int,
        "ratio": float,
        "flag": bool,
        "label": Literal["yes", "no"],
        "color": Color,
        "tags": list[str],
        "scores": dict[str, float],
        "maybe": Optional[int],
        "point": Point,
    }
    # Default instructions are DSPy's wording.
    assert AllTypes.instructions.startswith("Given the fields `text`, produce the fields `count`")


def test_annotation_without_field_is_an_error_naming_the_field():
    with pytest.raises(SignatureError, match="'oops'"):

        class Bad(dspy.Signature):
            question: str = dspy.InputField()
            oops: str
            answer: str = dspy.OutputField()


# ---- string form ----------------------------------------------------------------------------------


def test_string_form_with_types():
    sig = dspy.Signature(
        "context: list[str], question -> answer: int, conf: float, ok: bool, tag: Literal['a', 'b'], "
        "opt: Optional[int], table: dict[str, list[int]], alt: int | None",
        "Do it.",
    )
    assert sig.instructions == "Do it."
    ann = {k: f.annotation for k, f in sig.fields.items()}
    assert ann["context"] == list[str] and ann["question"] is str and ann["answer"] is int
    assert ann["conf"] is float and ann["ok"] is bool and ann["tag"] == Literal["a", "b"]
    assert ann["opt"] == Optional[int] and ann["alt"] == Optional[int]
    assert ann["table"] == dict[str, list[int]]


def test_string_form_custom_types_for_enum_and_pydantic():
    sig = make_signature(
        "q -> color: Color, points: list[Point]", custom_types={"Color": Color, "Point": Point}
    )
    assert sig.output_fields["color"].annotation is Color
    assert sig.output_fields["points"].annotation == list[Point]


def test_dict_form():
    sig = dspy.Signature({"q": (str, dspy.InputField(desc="the q")), "a": (int, dspy.OutputField())}, "Inst.")
    assert sig.signature == "q -> a"
    assert sig.fields["q"].desc == "the q"
    assert sig.output_fields["a"].annotation is int


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("a -> -> b", "exactly one '->'"),
        ("question answer", "exactly one '->'"),
        ("a b -> c", "invalid field name 'a b'"),
        ("1a -> b", "invalid field name '1a'"),
        ("a -> class", "invalid field name 'class'"),
        ("a ->", "no output fields"),
        ("a,,b -> c", "empty field name"),
        ("a, a -> b", "duplicate field name 'a'"),
        ("a -> a", "duplicate field name 'a'"),
        ("a: Foo -> b", "unknown type 'Foo'"),
        ("a: list[ -> b", "cannot parse type 'list\\['"),
        ("a -> b: str.upper", "'str.upper' .* is not a type"),
        ("a: __import__('os') -> b", "unsupported type expression"),
    ],
)
def test_malformed_signature_strings_name_the_problem(spec, message):
    with pytest.raises(SignatureError, match=message) as info:
        dspy.Signature(spec)
    assert isinstance(info.value, ValueError)  # also a ValueError, like DSPy's


def test_non_string_non_class_is_rejected():
    with pytest.raises(SignatureError, match="expected a signature string or Signature class"):
        dspy.Predict(42)


# ---- editing and immutability ----------------------------------------------------------------------


def test_editing_returns_new_signatures_and_leaves_the_original_alone():
    before = (QA.instructions, list(QA.fields))
    renamed = QA.with_instructions("Be brief.")
    appended = QA.append("confidence", dspy.OutputField(desc="0..1"), type_=float)
    prepended = QA.prepend("hint", dspy.InputField())
    inserted = QA.insert(1, "source", dspy.InputField())
    deleted = QA.delete("context")
    updated = QA.with_updated_fields("answer", desc="an integer", type_=float)

    assert (QA.instructions, list(QA.fields)) == before
    assert renamed.instructions == "Be brief." and list(renamed.fields) == list(QA.fields)
    assert list(appended.fields) == ["context", "question", "answer", "confidence"]
    assert appended.fields["confidence"].annotation is float
    assert list(prepended.input_fields) == ["hint", "context", "question"]
    assert list(inserted.input_fields) == ["context", "source", "question"]
    assert list(deleted.fields) == ["question", "answer"]
    assert updated.fields["answer"].desc == "an integer" and updated.fields["answer"].annotation is float
    # Editing keeps the instructions.
    assert appended.instructions == QA.instructions
    assert QA.fields["answer"].desc == "a whole number"


def test_signature_is_immutable():
    with pytest.raises(AttributeError, match="immutable"):
        QA.instructions = "changed"
    with pytest.raises(AttributeError, match="immutable"):
        QA.answer = dspy.OutputField()
    # Instantiating builds a record of the fields (as DSPy's pydantic signatures do), never a half-empty one.
    with pytest.raises(InputError, match="missing fields"):
        QA()
    fields = QA.fields
    fields.pop("answer")
    assert "answer" in QA.fields  # .fields hands out a copy


def test_delete_unknown_field_names_it():
    with pytest.raises(SignatureError, match="no field 'nope'"):
        QA.delete("nope")


def test_equals_compares_instructions_and_fields():
    assert QA.equals(QA.with_instructions(QA.instructions))
    assert not QA.equals(QA.with_instructions("other"))
    assert not QA.equals(QA.delete("context"))


def test_dump_and_load_state_uses_dspy_field_layout():
    state = QA.dump_state()
    assert state == {
        "instructions": "Answer the question from the context.",
        "fields": [
            {"prefix": "Context:", "description": "relevant facts"},
            {"prefix": "Question:", "description": "${question}"},
            {"prefix": "Answer:", "description": "a whole number"},
        ],
    }
    state["instructions"] = "New."
    state["fields"][1]["description"] = "what is asked"
    loaded = QA.load_state(state)
    assert loaded.instructions == "New."
    assert loaded.fields["question"].desc == "what is asked"
    assert loaded.fields["answer"].annotation is int
    with pytest.raises(SignatureError, match="2 fields but"):
        QA.load_state({"instructions": "x", "fields": state["fields"][:2]})


# ---- Example and Prediction ----------------------------------------------------------------------


def test_example_inputs_labels_and_copies():
    ex = Example(question="2+2?", answer="4", id=7).with_inputs("question")
    assert ex.question == "2+2?" and ex["answer"] == "4"
    assert dict(ex.inputs().items()) == {"question": "2+2?"}
    assert dict(ex.labels().items()) == {"answer": "4", "id": 7}
    assert ex.input_keys == frozenset({"question"})
    copy = ex.copy(answer="5")
    assert copy.answer == "5" and ex.answer == "4" and copy.input_keys == ex.input_keys
    assert "id" not in ex.without("id")
    with pytest.raises(AttributeError, match="no field 'missing'"):
        _ = ex.missing
    with pytest.raises(ValueError, match="with_inputs"):
        Example(a=1).inputs()


def test_prediction_completions():
    pred = Prediction.from_completions([{"answer": "a"}, {"answer": "b"}])
    assert pred.answer == "a"
    assert len(pred.completions) == 2
    assert pred.completions.answer == ["a", "b"]
    assert [p.answer for p in pred.completions] == ["a", "b"]


def test_example_any_values_roundtrip_to_dict():
    ex = Example({"a": 1, "b": [1, 2]}, c=Any)
    assert ex.toDict() == {"a": 1, "b": [1, 2], "c": Any}
