"""Issue 14, item 3: whatever the model writes, parsing fails only with an AdapterParseError that
keeps the raw completion; Predict then records the trace, tries the fallback, and the failure is
counted as ``parse`` (Evaluate) and rewarded as a format failure (GRPO rollouts). Also: an open
circuit breaker stops Evaluate, and an evaluation where every example failed has no score."""

from __future__ import annotations

import enum
import time
from typing import Literal, Optional

import pydantic
import pytest
from raw_servers import HungServer

import dspylite as dspy
from dspylite.adapters.chat import ChatAdapter
from dspylite.adapters.json_adapter import JSONAdapter
from dspylite.completion import Completion
from dspylite.errors import AdapterParseError, AllExamplesFailedError, ConfigError, LMUnavailableError
from dspylite.evaluate import Evaluate
from dspylite.example import Example
from dspylite.lm import LM
from dspylite.signatures import make_signature
from dspylite.trace import capture_traces
from dspylite.utils.parallel import parallel_map


class Point(pydantic.BaseModel):
    x: int
    y: int


class Color(enum.Enum):
    RED = "red"


def sig(type_text: str, **custom):
    return make_signature(f"question -> answer: {type_text}", custom_types=custom or None)


def chat_text(value: str) -> str:
    return f"[[ ## answer ## ]]\n{value}\n\n[[ ## completed ## ]]"


def assert_parse_error(adapter, signature, text: str) -> AdapterParseError:
    with pytest.raises(AdapterParseError) as info:
        adapter.parse(signature, text)
    assert info.value.completion == text and info.value.adapter == adapter.name
    return info.value


# ---- the numbered cases of the issue ----------------------------------------------------------


@pytest.mark.parametrize("type_text", ["list[int]", "dict[str, int]", "Point"])
def test_chat_adapter_unhashable_literal_is_a_parse_error(type_text: str) -> None:
    # ast.literal_eval("{[1]: 2}") raises TypeError: unhashable type: 'list'
    assert_parse_error(ChatAdapter(), sig(type_text, Point=Point), chat_text("{[1]: 2}"))


def test_json_adapter_dict_value_with_unhashable_set_is_a_parse_error() -> None:
    assert_parse_error(JSONAdapter(), sig("dict[str, int]"), '{"answer": "{1, [2]}"}')


@pytest.mark.parametrize("depth", [5_000, 100_000])
def test_deeply_nested_json_is_a_parse_error_in_both_adapters(depth: int) -> None:
    nested = "[" * depth + "]" * depth
    assert_parse_error(ChatAdapter(), sig("list[int]"), chat_text(nested))
    error = assert_parse_error(JSONAdapter(), sig("list[int]"), '{"answer": ' + nested + "}")
    assert "cannot be serialized to a JSON object" in str(error) and len(str(error)) < 3000


def test_integer_over_4300_digits_is_a_parse_error_in_both_adapters() -> None:
    digits = "7" * 5000
    # The JSON decoder refuses it (ValueError); the chat adapter's int field goes through pydantic.
    assert_parse_error(JSONAdapter(), sig("int"), '{"answer": ' + digits + "}")
    assert_parse_error(JSONAdapter(), sig("list[int]"), '{"answer": "[' + digits + ']"}')
    assert_parse_error(ChatAdapter(), sig("list[int]"), chat_text(f"[{digits}]"))
    error = assert_parse_error(ChatAdapter(), sig("int"), chat_text(digits + "x"))
    assert len(str(error)) < 2500  # the message quotes the text bounded, not 5000 digits
    assert error.completion == chat_text(digits + "x")  # while the error keeps all of it


@pytest.mark.parametrize("text", ["{" * 40_000, "{" * 40_000 + "}", "x{" * 20_000 + '"}'])
def test_json_object_extraction_is_linear(text: str) -> None:
    adapter, signature = JSONAdapter(), sig("str")
    started = time.perf_counter()
    with pytest.raises(AdapterParseError):
        adapter.parse(signature, text)
    assert time.perf_counter() - started < 0.1


def test_json_object_is_found_before_trailing_braces() -> None:
    # The object at the first "{" wins even when later text holds another "}".
    assert JSONAdapter().parse(sig("int"), 'Sure: {"answer": 4}. Note {this}') == {"answer": 4}


# ---- Predict: trace, fallback, counted as parse -------------------------------------------------


class TextLM:
    """Answers every call with the same text."""

    def __init__(self, text: str):
        self.text = text
        self.model = "scripted"
        self.kwargs: dict = {}

    def generate(self, messages, *, n=1, rollout_id=None, **kwargs):
        return [Completion(text=self.text, model=self.model, token_ids=[1, 2]) for _ in range(n)]

    def copy(self, **overrides):
        return self

    def dump_state(self):
        return {"model": self.model}


class CrashingAdapter(ChatAdapter):
    """A user-written adapter whose parser has a bug that raises TypeError."""

    name = "crashing"

    def parse(self, signature, completion):
        raise TypeError("unhashable type: 'list'")


def test_predict_keeps_the_trace_and_uses_the_fallback_whatever_the_parser_raised() -> None:
    adapter = CrashingAdapter(fallback=JSONAdapter(structured=False))
    text = '{"answer": "forty-two"}'
    predict = dspy.Predict("question -> answer", lm=TextLM(text), adapter=adapter)
    with capture_traces() as traces:
        prediction = predict(question="?")
    assert prediction.answer == "forty-two"
    assert [t.adapter for t in traces] == ["crashing", "json"]
    assert traces[0].completion == text and traces[0].outputs is None
    assert "TypeError: unhashable type" in traces[0].error
    assert adapter.usage["parse_failures"] == 1 and adapter.usage["fallbacks"] == 1


def test_evaluate_counts_any_parser_crash_as_parse_and_all_failed_has_no_score() -> None:
    program = dspy.Predict("question -> answer", lm=TextLM("whatever"), adapter=CrashingAdapter())
    devset = [Example(question=f"q{i}", answer="a").with_inputs("question") for i in range(4)]
    evaluate = Evaluate(devset=devset, metric=lambda e, p, t=None: 1.0, display_progress=False, num_threads=2)
    with pytest.raises(AllExamplesFailedError, match=r"all 4 examples failed \(4 parse\)") as info:
        evaluate(program)
    assert info.value.error_counts == {"parse": 4}
    evaluate.raise_if_all_failed = False
    result = evaluate(program)
    assert result.error_counts == {"parse": 4} and result.summary()["failed"] == 4


def test_grpo_rollouts_reward_a_parser_crash_as_a_format_failure() -> None:
    from rl.rollouts import collect_rollouts

    text = chat_text("{[1]: 2}")  # crashed the chat adapter with TypeError before the fix
    program = dspy.Predict("question -> answer: list[int]", lm=TextLM(text))
    examples = [Example(question=f"q{i}", answer=[1]).with_inputs("question") for i in range(2)]
    batch = collect_rollouts(
        program,
        examples,
        lambda e, p, t=None: 1.0,
        num_rollouts=2,
        temperature=1.0,
        format_failure_reward=-1.0,
        num_threads=2,
    )
    assert not batch.excluded and len(batch.rollouts) == 4
    assert all(r.error_kind == "parse" and r.reward == -1.0 for r in batch.rollouts)
    assert all(r.traces and r.traces[-1].completion == text for r in batch.rollouts)


# ---- item 2: Evaluate against a server that stopped answering -------------------------------------


def test_evaluate_stops_at_the_open_breaker_and_reraises_it() -> None:
    devset = [Example(question=f"q{i}", answer="a").with_inputs("question") for i in range(10)]
    with HungServer() as server:
        lm = LM(
            "m", api_base=server.api_base, timeout=0.2, num_retries=0, max_consecutive_failures=2, cache=False
        )
        program = dspy.Predict("question -> answer", lm=lm)
        evaluate = Evaluate(
            devset=devset, metric=lambda e, p, t=None: 1.0, display_progress=False, num_threads=1
        )
        started = time.perf_counter()
        with pytest.raises(LMUnavailableError, match=server.api_base.replace(".", r"\.")):
            evaluate(program)
        assert time.perf_counter() - started < 3.0
        assert server.connections == 2  # the other 8 examples never waited on the server


# ---- item 6: thread counts ----------------------------------------------------------------------


@pytest.mark.parametrize("threads", [-1, 0, 1.5])
def test_bad_num_threads_is_refused(threads) -> None:
    with pytest.raises(ConfigError, match="num_threads"):
        Evaluate(devset=[], metric=lambda e, p, t=None: 1.0, num_threads=threads)
    with pytest.raises(ConfigError, match="num_threads"):
        Evaluate(devset=[], metric=lambda e, p, t=None: 1.0)(dspy.Predict("a -> b"), num_threads=threads)
    with pytest.raises(ConfigError, match="num_threads"):
        parallel_map(str, [1, 2], num_threads=threads)


def test_optional_literal_enum_fields_still_parse() -> None:
    assert ChatAdapter().parse(sig("Optional[int]"), chat_text("null")) == {"answer": None}
    assert ChatAdapter().parse(sig("Literal['a', 'b']"), chat_text("B")) == {"answer": "b"}
    assert ChatAdapter().parse(sig("Color", Color=Color), chat_text("red")) == {"answer": Color.RED}
    assert Optional[int] is not None and Literal is not None  # imported for the signatures above
