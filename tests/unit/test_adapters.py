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
    # DSPy's system message, word for word.
    assert system.startswith("Your input fields are:\n1. `question` (str): what is asked\n")
    assert "Your output fields are:\n1. `answer` (int): a number\n" in system
    assert (
        "[[ ## answer ## ]]\n{answer}        # note: the value you produce must be a single int value"
        in system
    )
    assert system.endswith("In adhering to this structure, your objective is: \n        Answer the question.")
    assert messages[1]["content"] == "[[ ## question ## ]]\n1+1?"
    assert messages[2]["content"] == "[[ ## answer ## ]]\n2\n\n[[ ## completed ## ]]\n"
    assert messages[4]["content"] == "[[ ## answer ## ]]\n4\n\n[[ ## completed ## ]]\n"
    assert messages[-1]["content"] == (
        "[[ ## question ## ]]\n3+3?\n\nRespond with the corresponding output fields, starting with the field "
        "`[[ ## answer ## ]]` (must be formatted as a valid Python int), and then ending with the marker for "
        "`[[ ## completed ## ]]`."
    )


def test_chat_parse_coerces_every_declared_type():
    adapter = ChatAdapter()
    text = adapter.format_assistant_message_content(TYPED, TYPED_VALUES)
    assert '[[ ## point ## ]]\n{"x": 1, "y": 2}' in text
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
    with pytest.raises(
        AdapterParseError, match=r"Expected to find output fields in the LM response: \[answer\]"
    ) as info:
        adapter.parse(QA, "the answer is 4")
    assert info.value.completion == "the answer is 4" and info.value.lm_response == "the answer is 4"
    assert info.value.adapter == "chat" and info.value.adapter_name == "ChatAdapter"
    assert info.value.signature is QA

    bad = "[[ ## answer ## ]]\nfour\n\n[[ ## completed ## ]]"
    with pytest.raises(AdapterParseError, match="Failed to parse field answer with value four") as info:
        adapter.parse(QA, bad)
    assert info.value.completion == bad


def test_bad_literal_and_enum_values_are_parse_errors():
    adapter = ChatAdapter()
    sig = make_signature("q -> tag: Literal['yes', 'no'], color: Color", custom_types={"Color": Color})
    with pytest.raises(AdapterParseError, match="field tag"):
        adapter.parse(sig, "[[ ## tag ## ]]\nmaybe\n[[ ## color ## ]]\nred")
    with pytest.raises(AdapterParseError, match="field color"):
        adapter.parse(sig, "[[ ## tag ## ]]\nyes\n[[ ## color ## ]]\ngreen")


# ---- JSON adapter ---------------------------------------------------------------------------------


def test_json_format_as_dspy_writes_it():
    adapter = JSONAdapter()
    messages = adapter.format(QA, [{"question": "1+1?", "answer": 2}], {"question": "3+3?"})
    system = messages[0]["content"]
    assert "Outputs will be a JSON object with the following fields." in system
    assert '"answer": "{answer}        # note: the value you produce must be a single int value"' in system
    assert messages[1]["content"] == "[[ ## question ## ]]\n1+1?"
    assert json.loads(messages[2]["content"]) == {"answer": 2}
    assert messages[-1] == {
        "role": "user",
        "content": "[[ ## question ## ]]\n3+3?\n\nRespond with a JSON object in the following order of fields: "
        "`answer` (must be formatted as a valid Python int).",
    }


def test_structured_output_schema_meets_openai_rules_and_refs_resolve():
    from dspylite.adapters.json_adapter import _get_structured_outputs_response_format, response_format_body

    sig = make_signature(
        "q -> points: list[Point], color: Color", custom_types={"Point": Point, "Color": Color}
    )
    body = response_format_body(_get_structured_outputs_response_format(sig))
    assert body["type"] == "json_schema" and body["json_schema"]["strict"] is True
    schema = body["json_schema"]["schema"]
    assert schema["required"] == ["points", "color"] and schema["additionalProperties"] is False
    assert schema["properties"]["points"]["items"] == {"$ref": "#/$defs/Point"}
    assert schema["$defs"]["Point"]["additionalProperties"] is False
    assert schema["$defs"]["Color"]["enum"] == ["red", "blue"]
    # An open mapping cannot be a strict schema: the adapter then asks for JSON mode.
    with pytest.raises(ValueError, match="open-ended mapping"):
        _get_structured_outputs_response_format(make_signature("q -> table: dict[str, int]"))


def test_json_parse_coerces_types_and_tolerates_surrounding_text():
    adapter = JSONAdapter()
    text = "Here you go: " + adapter.format_assistant_message_content(TYPED, TYPED_VALUES) + " -- done"
    assert adapter.parse(TYPED, text) == TYPED_VALUES
    # A number where a string is declared stays text; a trailing comma is forgiven.
    assert adapter.parse(make_signature("q -> a"), '{"a": 4}') == {"a": "4"}
    assert adapter.parse(QA, '{"answer": 4,}') == {"answer": 4}


@pytest.mark.parametrize(
    ("completion", "message"),
    [
        ("no json here", "cannot be serialized to a JSON object"),
        ('{"answer": 4', "cannot be serialized to a JSON object"),
        ('{"other": 4}', r"Expected to find output fields in the LM response: \[answer\]"),
        ('{"answer": "many"}', "Failed to parse field answer"),
    ],
)
def test_json_parse_errors_carry_raw_completion(completion, message):
    with pytest.raises(AdapterParseError, match=message) as info:
        JSONAdapter().parse(QA, completion)
    assert info.value.completion == completion and info.value.adapter == "json"


# ---- through Predict: fallback, requests, demos --------------------------------------------------------


def test_json_adapter_sends_the_output_schema_to_an_lm_that_takes_one():
    class SchemaLM(DummyLM):
        supported_params = {"response_format"}
        supports_response_schema = True

    lm = SchemaLM([{"answer": 5}])
    pred = dspy.Predict(QA, lm=lm, adapter=JSONAdapter())(question="2+3?")
    assert pred.answer == 5
    sent = lm.history[-1]["kwargs"]["response_format"]
    assert sent.model_json_schema()["properties"]["answer"]["type"] == "integer"

    # An LM that takes JSON mode only gets JSON mode; one that takes neither gets nothing.
    class JSONModeLM(DummyLM):
        supported_params = {"response_format"}

    lm = JSONModeLM([{"answer": 5}])
    dspy.Predict(QA, lm=lm, adapter=JSONAdapter())(question="2+3?")
    assert lm.history[-1]["kwargs"]["response_format"] == {"type": "json_object"}
    lm = DummyLM([{"answer": 5}], adapter=JSONAdapter())
    dspy.Predict(QA, lm=lm, adapter=JSONAdapter())(question="2+3?")
    assert "response_format" not in lm.history[-1]["kwargs"]


def test_the_http_lm_sends_a_pydantic_response_format_as_a_json_schema():
    from dspylite.adapters.json_adapter import _get_structured_outputs_response_format

    lm = dspy.LM("served-model", api_base="http://127.0.0.1:9/v1")
    assert lm.supports_response_schema and "response_format" in lm.supported_params
    model = _get_structured_outputs_response_format(QA)
    body = lm._build_body([{"role": "user", "content": "hi"}], None, 1, {"response_format": model})
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["properties"]["answer"]["type"] == "integer"


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
    # DSPy's default: the chat adapter retries with JSON; the switch turns it off. JSON has none.
    assert isinstance(ChatAdapter().fallback, JSONAdapter)
    assert ChatAdapter(use_json_adapter_fallback=False).fallback is None
    assert JSONAdapter().fallback is None


def test_fallback_attempt_is_traced_with_its_adapter_name():
    lm = DummyLM([{"answer": 7}, {"answer": 7}], adapter=ChatAdapter())
    with dspy.capture_traces() as traces:
        dspy.Predict(QA, lm=lm, adapter=JSONAdapter(fallback=ChatAdapter()))(question="?")
    assert [(t.adapter, t.ok) for t in traces] == [("json", False), ("chat", True)]
    assert "cannot be serialized to a JSON object" in traces[0].error


def test_demos_are_dicts_or_examples_and_unusable_ones_are_skipped(caplog):
    with pytest.raises(DemoError, match="demo #0 must be an Example or dict, got str"):
        ChatAdapter().format(QA, ["not a demo"], {"question": "x"})
    # As in DSPy: a demo with no input field (or no output field) is left out; one with some
    # fields missing is shown as an incomplete example.
    messages = ChatAdapter().format(QA, [{"unrelated": 1}, {"question": "q"}], {"question": "x"})
    assert [m["role"] for m in messages] == ["system", "user"]
    sig = make_signature("q, c -> a")
    messages = ChatAdapter().format(sig, [{"q": "x", "a": "y"}], {"q": "z", "c": "w"})
    assert messages[1]["content"].startswith("This is an example of the task, though some input or output")


def test_configured_adapter_is_used_by_predict_and_dummy_lm():
    dspy.configure(adapter=JSONAdapter(structured=False), lm=DummyLM([{"answer": 9}]))
    with dspy.capture_traces() as traces:
        assert dspy.Predict(QA)(question="?").answer == 9
    assert traces[0].adapter == "json" and json.loads(traces[0].completion) == {"answer": 9}
