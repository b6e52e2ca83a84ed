"""Issue 14, item 3: a hypothesis fuzz test of both adapters over every supported output type.

Whatever the completion, ``parse`` returns the output fields or raises ``AdapterParseError`` that
carries the raw completion: never TypeError, RecursionError, ValueError or anything else. The
examples are bounded (``MAX_EXAMPLES`` per type and adapter) so the suite stays fast.
"""

from __future__ import annotations

import enum
import json
from typing import Any, Literal, Optional

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dspylite.adapters.chat import ChatAdapter
from dspylite.adapters.json_adapter import JSONAdapter
from dspylite.errors import AdapterParseError
from dspylite.signatures import make_signature

MAX_EXAMPLES = 50


class Point(pydantic.BaseModel):
    x: int
    tags: list[str] = []


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


TYPES: dict[str, Any] = {
    "str": "str",
    "int": "int",
    "float": "float",
    "bool": "bool",
    "Literal": "Literal['yes', 'no', 3]",
    "Enum": "Mood",
    "list": "list[int]",
    "dict": "dict[str, list[int]]",
    "Optional": "Optional[float]",
    "pydantic": "Point",
}

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_soup = st.text(alphabet="{}[]()\"',:.-0123456789eE nulltrueNoneTF\\", max_size=80)
_value_texts = st.one_of(
    st.text(max_size=120),
    _soup,
    _json_values.map(json.dumps),
    _json_values.map(repr),  # Python literals: sets, tuples, {[1]: 2}-like shapes via the soup
    st.integers(1, 3000).map(lambda d: "[" * d + "]" * d),
    st.integers(1, 3000).map(lambda d: "{" * d),
    st.integers(4200, 6000).map(lambda n: "9" * n),
    st.sampled_from(["{[1]: 2}", "{1, [2]}", "{{}: 1}", "[1, 2", "1e999", "-inf", "NaN", "\x00", "\ud800"]),
)


@st.composite
def chat_completions(draw: Any) -> str:
    value = draw(_value_texts)
    shape = draw(st.sampled_from(["field", "field+completed", "raw", "two markers"]))
    if shape == "raw":
        return value
    if shape == "two markers":
        return f"[[ ## answer ## ]]\n{value}\n[[ ## answer ## ]]\n{draw(_value_texts)}"
    text = f"[[ ## answer ## ]]\n{value}"
    return text + "\n\n[[ ## completed ## ]]" if shape == "field+completed" else text


@st.composite
def json_completions(draw: Any) -> str:
    shape = draw(st.sampled_from(["value", "string", "raw", "prefixed"]))
    if shape == "raw":
        return draw(_value_texts)
    if shape == "string":
        body = json.dumps({"answer": draw(_value_texts)})
    else:
        body = '{"answer": ' + draw(_value_texts) + "}"
    return ("Here you go: " + body + " }") if shape == "prefixed" else body


def _signature(type_text: str):
    return make_signature(f"question -> answer: {type_text}", custom_types={"Point": Point, "Mood": Mood})


def _check(adapter: Any, signature: Any, text: str) -> None:
    try:
        parsed = adapter.parse(signature, text)
    except AdapterParseError as exc:
        assert exc.completion == text
        assert exc.adapter == adapter.name
        return
    assert set(parsed) == {"answer"}


_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,  # the same cases on every run: a failure here is reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("type_key", list(TYPES))
@_SETTINGS
@given(text=chat_completions())
def test_chat_adapter_fuzz(type_key: str, text: str) -> None:
    _check(ChatAdapter(), _signature(TYPES[type_key]), text)


@pytest.mark.parametrize("type_key", list(TYPES))
@_SETTINGS
@given(text=json_completions())
def test_json_adapter_fuzz(type_key: str, text: str) -> None:
    _check(JSONAdapter(), _signature(TYPES[type_key]), text)


def test_the_fuzzed_types_are_the_supported_ones() -> None:
    # Keeps TYPES honest: every entry builds a signature whose annotation is that kind of type.
    annotations = {k: _signature(v).output_fields["answer"].annotation for k, v in TYPES.items()}
    assert annotations["Enum"] is Mood and annotations["pydantic"] is Point
    assert annotations["Optional"] == Optional[float] and annotations["Literal"] == Literal["yes", "no", 3]
