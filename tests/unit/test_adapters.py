"""Chat and JSON adapters: prompt formatting, demos as turns, typed parsing, parse errors, fallback."""

from __future__ import annotations

import enum
import json
from importlib import import_module

import pydantic
import pytest

import dspylite as dspy
from dspylite.adapters import ChatAdapter, JSONAdapter
from dspylite.errors import AdapterParseError, DemoError
from dspylite.example import Example
from dspylite.signatures import make_signature
from dspylite.utils import DummyLM

settings_module = import_module("dspylite.settings")


@pytest.fixture(autouse=True)
def _restore_settings():
    saved = settings_module._GLOBAL
    yield
    settings_module._GLOBAL = saved


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(pydantic.BaseModel):
    x: int
    y: int


class QA(dspy.Signature):
    """Answer the question."""

    question: str = dspy.InputField(desc="what is asked")
    answer: int = dspy.OutputField(desc="a number")


TYPED = make_signature(
    "q -> n: int, r: float, ok: bool, tag: Literal['yes', 'no'], color: Color, tags: list[str], "
    "table: dict[str, int], maybe: Optional[int], point: Point",
    custom_types={"Color": Color, "Point": Point},
)

TYPED_VALUES = {
    "n": 3,
    "r": 0.5,
    "ok": True,
    "tag": "yes",
    "color": Color.BLUE,
    "tags": ["a", "b"],
    "table": {"k": 1},
    "maybe": None,
    "point": Point(x=1, y=2),
}


# ---- chat adapter ---------------------------------------------------------------------------------


def test_chat_format_system_user_and_demos_as_turns():
    adapter = ChatAdapter()
    demos = [Example(question="1+1?", answer=2), {"question": "2+2?", "answer": 4, "extra": "ignored"}]
    messages = adapter.format(QA, demos, {"question": "3+3?"})
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    system = messages[0]["content"]
    assert "- question (str): what is asked" in system and "- answer (int): a number" in system
    assert "Answer the question." in system
    assert messages[1]["content"] == "[[ ## question ## ]]\n1+1?"
    assert messages[2]["content"] == "[[ ## answer ## ]]\n2\n\n[[ ## completed ## ]]"
    assert messages[4]["content"] == "[[ ## answer ## ]]\n4\n\n[[ ## completed ## ]]"
    last = messages[-1]["content"]
    assert last.startswith("[[ ## question ## ]]\n3+3?\n\n")
    assert "Respond with `[[ ## answer ## ]]` (type: int), then `[[ ## completed ## ]]`." in last


def test_chat_parse_coerces_every_declared_type():
    adapter = ChatAdapter()
    text = adapter.format_completion(TYPED, TYPED_VALUES)
    assert '[[ ## point ## ]]\n{"x":1,"y":2}' in text
    parsed = adapter.parse(TYPED, text)
    assert parsed == TYPED_VALUES


def test_chat_parse_is_lenient_where_models_drift():
    adapter = ChatAdapter()
    text = (
        "Sure!\n[[ ## n ## ]]\n1,000.\n[[ ## r ## ]]\n2\n[[ ## ok ## ]]\nYes\n[[ ## tag ## ]]\n'No'\n"
        "[[ ## color ## ]]\nRED\n[[ ## tags ## ]]\n['x']\n[[ ## table ## ]]\n```json\n{\"a\": 2}\n```\n"
        '[[ ## maybe ## ]]\nnull\n[[ ## point ## ]]\n{"x": "3", "y": 4}\n[[ ## completed ## ]]'
    )
    parsed = adapter.parse(TYPED, text)
    assert parsed == {
        "n": 1000,
        "r": 2.0,
        "ok": True,
        "tag": "no",
        "color": Color.RED,
        "tags": ["x"],
        "table": {"a": 2},
        "maybe": None,
        "point": Point(x=3, y=4),
    }


def test_chat_parse_error_carries_raw_completion_and_names_the_field():
    adapter = ChatAdapter()
    with pytest.raises(AdapterParseError, match=r"missing output field\(s\) \['answer'\]") as info:
        adapter.parse(QA, "the answer is 4")
    assert info.value.completion == "the answer is 4"
    assert info.value.adapter == "chat" and info.value.signature == "question -> answer"

    bad = "[[ ## answer ## ]]\nfour\n\n[[ ## completed ## ]]"
    with pytest.raises(AdapterParseError, match="field 'answer': expected int, got 'four'") as info:
        adapter.parse(QA, bad)
    assert info.value.completion == bad


def test_bad_literal_and_enum_values_are_parse_errors():
    adapter = ChatAdapter()
    sig = make_signature("q -> tag: Literal['yes', 'no'], color: Color", custom_types={"Color": Color})
    with pytest.raises(AdapterParseError, match="field 'tag'"):
        adapter.parse(sig, "[[ ## tag ## ]]\nmaybe\n[[ ## color ## ]]\nred")
    with pytest.raises(AdapterParseError, match="field 'color'"):
        adapter.parse(sig, "[[ ## tag ## ]]\nyes\n[[ ## color ## ]]\ngreen")


# ---- JSON adapter ---------------------------------------------------------------------------------


def test_json_format_and_response_format_schema():
    adapter = JSONAdapter()
    messages = adapter.format(QA, [{"question": "1+1?", "answer": 2}], {"question": "3+3?"})
    assert 'Reply with one JSON object with the keys "answer"' in messages[0]["content"]
    assert messages[1]["content"] == "question: 1+1?"
    assert json.loads(messages[2]["content"]) == {"answer": 2}
    assert messages[-1] == {"role": "user", "content": "question: 3+3?"}

    request = adapter.request_kwargs(QA)
    fmt = request["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "QA"
    schema = fmt["json_schema"]["schema"]
    assert schema["type"] == "object" and schema["required"] == ["answer"]
    assert schema["properties"]["answer"]["type"] == "integer"
    assert schema["additionalProperties"] is False
    assert JSONAdapter(structured=False).request_kwargs(QA) == {}


def test_json_schema_hoists_nested_definitions_so_refs_resolve():
    sig = make_signature(
        "q -> points: list[Point], color: Color", custom_types={"Point": Point, "Color": Color}
    )
    schema = JSONAdapter().output_schema(sig)
    assert "Point" in schema["$defs"]
    assert schema["properties"]["points"]["items"] == {"$ref": "#/$defs/Point"}
    assert "$defs" not in schema["properties"]["points"]
    assert schema["properties"]["color"]["enum"] == ["red", "blue"]


def test_json_parse_coerces_types_and_tolerates_surrounding_text():
    adapter = JSONAdapter()
    text = "Here you go: " + adapter.format_completion(TYPED, TYPED_VALUES) + " -- done"
    assert adapter.parse(TYPED, text) == TYPED_VALUES
    # A number where a string is declared stays text.
    assert adapter.parse(make_signature("q -> a"), '{"a": 4}') == {"a": "4"}


@pytest.mark.parametrize(
    ("completion", "message"),
    [
        ("no json here", "no JSON object found"),
        ('{"answer": 4', "no JSON object found"),
        ('{"answer": 4,}', "invalid JSON"),
        ('{"other": 4}', r"missing key\(s\) \['answer'\]"),
        ('{"answer": "many"}', "field 'answer': expected int"),
    ],
)
def test_json_parse_errors_carry_raw_completion(completion, message):
    with pytest.raises(AdapterParseError, match=message) as info:
        JSONAdapter().parse(QA, completion)
    assert info.value.completion == completion and info.value.adapter == "json"


# ---- through Predict: fallback, requests, demos --------------------------------------------------------


def test_json_adapter_sends_response_format_to_the_lm():
    lm = DummyLM([{"answer": 5}])
    pred = dspy.Predict(QA, lm=lm, adapter=JSONAdapter())(question="2+3?")
    assert pred.answer == 5
    sent = lm.history[-1]["kwargs"]["response_format"]
    assert sent["json_schema"]["schema"]["properties"]["answer"]["type"] == "integer"


def test_fallback_is_explicit_and_counted():
    chat_text_lm = DummyLM([{"answer": 7}, {"answer": 7}], adapter=ChatAdapter())  # answers in chat format
    strict = JSONAdapter()
    with pytest.raises(AdapterParseError):
        dspy.Predict(QA, lm=chat_text_lm, adapter=strict)(question="?")
    assert strict.usage == {"calls": 1, "parse_failures": 1, "fallbacks": 0}

    lm = DummyLM([{"answer": 7}, {"answer": 7}], adapter=ChatAdapter())
    with_fallback = JSONAdapter(fallback=ChatAdapter())
    pred = dspy.Predict(QA, lm=lm, adapter=with_fallback)(question="?")
    assert pred.answer == 7
    assert with_fallback.usage["fallbacks"] == 1 and with_fallback.usage["parse_failures"] == 1
    assert with_fallback.fallback.usage == {"calls": 1, "parse_failures": 0, "fallbacks": 0}
    assert len(lm.history) == 2  # the fallback made its own, visible LM call


def test_fallback_attempt_is_traced_with_its_adapter_name():
    lm = DummyLM([{"answer": 7}, {"answer": 7}], adapter=ChatAdapter())
    with dspy.capture_traces() as traces:
        dspy.Predict(QA, lm=lm, adapter=JSONAdapter(fallback=ChatAdapter()))(question="?")
    assert [(t.adapter, t.ok) for t in traces] == [("json", False), ("chat", True)]
    assert "no JSON object found" in traces[0].error


@pytest.mark.parametrize(
    ("demo", "message"),
    [
        ("not a demo", "demo #0 must be an Example or dict, got str"),
        ({"unrelated": 1}, r"demo #0 has none of the input fields \['question'\]"),
        ({"question": "q", "answer": "lots"}, "demo #0: field 'answer': expected int"),
    ],
)
def test_wrongly_typed_demos_raise_demo_error(demo, message):
    with pytest.raises(DemoError, match=message):
        ChatAdapter().format(QA, [demo], {"question": "x"})


def test_text_field_rejects_structured_demo_value():
    sig = make_signature("q -> a")
    with pytest.raises(DemoError, match="field 'a' should be str, got list"):
        ChatAdapter().format(sig, [{"q": "x", "a": ["x"]}], {"q": "y"})
    # Plain scalars are fine for a text field.
    ChatAdapter().format(sig, [{"q": "x", "a": 3}], {"q": "y"})


def test_configured_adapter_is_used_by_predict_and_dummy_lm():
    dspy.configure(adapter=JSONAdapter(structured=False), lm=DummyLM([{"answer": 9}]))
    with dspy.capture_traces() as traces:
        assert dspy.Predict(QA)(question="?").answer == 9
    assert traces[0].adapter == "json" and json.loads(traces[0].completion) == {"answer": 9}
