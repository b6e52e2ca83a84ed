"""Evaluate: parallel runs, per-example error accounting, traces, progress, bad metrics."""

from __future__ import annotations

import threading
from importlib import import_module

import pytest

import dspylite as dspy
from dspylite.completion import Completion
from dspylite.errors import AllExamplesFailedError, EvaluationError, LMServerError, MetricError
from dspylite.evaluate import Evaluate, example_id
from dspylite.example import Example
from dspylite.utils import DummyLM

settings_module = import_module("dspylite.settings")
evaluate_module = import_module("dspylite.evaluate.evaluate")


@pytest.fixture(autouse=True)
def _restore_settings():
    saved = settings_module._GLOBAL
    yield
    settings_module._GLOBAL = saved


class Scripted:
    """Answers ``question: N`` with N*2, except: N % 10 == 3 -> unparseable, N % 10 == 7 -> server error.

    It records which threads served calls, to show the run was concurrent.
    """

    model = "scripted"

    def __init__(self):
        self.threads: set[int] = set()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0

    def generate(self, messages, *, n=1, rollout_id=None, **kwargs):
        with self.lock:
            self.threads.add(threading.get_ident())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            number = int(messages[-1]["content"].split("\n")[1])
            threading.Event().wait(0.001)  # let other workers overlap
            if number % 10 == 7:
                raise LMServerError("HTTP 503 from stub", status_code=503)
            text = (
                "garbage"
                if number % 10 == 3
                else f"[[ ## answer ## ]]\n{number * 2}\n\n[[ ## completed ## ]]"
            )
            return [Completion(text=text, model=self.model, token_ids=[1, 2], prompt_token_ids=[3])] * n
        finally:
            with self.lock:
                self.in_flight -= 1

    def copy(self, **overrides):
        return self

    def dump_state(self):
        return {"model": self.model}


def devset(n: int = 200) -> list[Example]:
    return [Example(question=str(i), answer=i * 2, id=f"q{i}").with_inputs("question") for i in range(n)]


def metric(example, prediction, trace=None):
    if int(example.question) % 10 == 9:
        raise KeyError("metric blew up")
    return prediction.answer == example.answer


def test_200_examples_in_parallel_with_errors_counted_and_traces():
    lm = Scripted()
    dspy.configure(lm=lm)
    program = dspy.Predict("question -> answer: int")
    evaluate = Evaluate(
        devset=devset(), metric=metric, num_threads=8, display_progress=False, return_traces=True
    )
    result = evaluate(program)

    assert len(result.results) == 200
    assert result.error_counts == {"parse": 20, "lm": 20, "metric": 20}
    assert result.score == 70.0  # 140 of 200 correct; every failure scores 0
    assert lm.max_in_flight > 1 and len(lm.threads) > 1
    by_id = {r.example.id: r for r in result.results}
    assert by_id["q3"].error_kind == "parse" and "garbage" in by_id["q3"].error
    assert by_id["q7"].error_kind == "lm" and "503" in by_id["q7"].error
    assert by_id["q9"].error_kind == "metric" and "KeyError" in by_id["q9"].error
    assert by_id["q9"].prediction.answer == 18  # the program ran; only the metric failed
    assert [r.example.id for r in result.results] == [f"q{i}" for i in range(200)]  # devset order

    # Traces: one per LM call that returned, each tied to its example; the parse failures included,
    # each twice (the chat completion, then ChatAdapter's JSON retry of it).
    assert len(result.traces) == 200
    assert [t.adapter for t in by_id["q3"].traces] == ["chat", "json"]
    t0 = by_id["q0"].traces[0]
    assert t0.example_id == "q0" and t0.completion_token_ids == [1, 2] and t0.prompt_token_ids == [3]
    assert t0.messages[-1]["content"].startswith("[[ ## question ## ]]\n0")
    assert by_id["q3"].traces[0].error is not None and by_id["q7"].traces == []
    mean, lo, hi = result.interval()
    assert mean == 0.7 and lo < 0.7 < hi


def test_traces_are_not_kept_unless_asked():
    dspy.configure(lm=Scripted())
    result = Evaluate(devset=devset(20), metric=metric, display_progress=False)(
        dspy.Predict("question -> answer: int")
    )
    assert result.traces == []


def test_max_errors_stops_the_run():
    dspy.configure(lm=Scripted())
    evaluate = Evaluate(devset=devset(), metric=metric, num_threads=4, display_progress=False, max_errors=5)
    with pytest.raises(EvaluationError, match="more than max_errors=5") as info:
        evaluate(dspy.Predict("question -> answer: int"))
    assert "first error" in str(info.value)


def test_metric_returning_a_non_number_is_a_metric_error():
    dspy.configure(lm=DummyLM({"": {"answer": "x"}}))
    evaluate = Evaluate(devset=devset(30), metric=lambda e, p, t=None: "yes", display_progress=False)
    with pytest.raises(MetricError, match="metric returned str \\('yes'\\); it must return a number or bool"):
        evaluate(dspy.Predict("question -> answer"))
    with pytest.raises(MetricError, match="needs a metric"):
        Evaluate(devset=devset(3), display_progress=False)(dspy.Predict("question -> answer"))


def test_program_errors_are_labelled_program():
    class Broken(dspy.Module):
        def forward(self, question):
            raise ZeroDivisionError("bug in forward")

    evaluate = Evaluate(devset=devset(10), metric=metric, display_progress=False, failure_score=0.0)
    # Every example failed: no score, a typed error with the counts by kind.
    with pytest.raises(AllExamplesFailedError, match=r"all 10 examples failed \(10 program\)") as info:
        evaluate(Broken())
    assert info.value.error_counts == {"program": 10}
    assert "ZeroDivisionError: bug in forward" in str(info.value)
    evaluate.raise_if_all_failed = False
    result = evaluate(Broken())
    assert result.error_counts == {"program": 10} and result.score == 0.0
    assert "ZeroDivisionError: bug in forward" in result.results[0].error


def test_progress_bar_advances_once_per_example(monkeypatch):
    updates: list[int] = []

    class Bar:
        def __init__(self, total, desc):
            self.total = total

        def update(self, n):
            updates.append(n)

        def close(self):
            updates.append(-1)

    monkeypatch.setattr(evaluate_module, "_progress", Bar)
    dspy.configure(lm=DummyLM({"": {"answer": "1"}}))
    Evaluate(devset=devset(25), metric=lambda e, p, t=None: 1.0, display_progress=True)(
        dspy.Predict("question -> answer")
    )
    assert updates == [1] * 25 + [-1]


def test_example_ids_are_stable_without_an_id_field():
    a = Example(question="x", answer="1").with_inputs("question")
    b = Example(question="x", answer="2").with_inputs("question")
    assert example_id(a) == example_id(b) and len(example_id(a)) == 16
    assert example_id(Example(id=5, question="x")) == "5"


def test_every_answer_unparsed_under_the_chat_adapter_suggests_the_json_adapter() -> None:
    """SmolLM2-135M never writes the chat markers; the error then names the setting that fixes it."""
    import dspylite as dspy
    from dspylite.errors import AllExamplesFailedError
    from dspylite.utils.dummy_lm import DummyLM

    lm = DummyLM({"no such input": {"answer": "x"}})  # answers plain text: no field markers
    devset = [dspy.Example(question=f"q{i}", answer="a").with_inputs("question") for i in range(3)]
    evaluate = dspy.Evaluate(devset=devset, metric=lambda e, p, t=None: 1.0, num_threads=1)
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
        with pytest.raises(
            AllExamplesFailedError, match=r"(?s)all 3 examples failed \(3 parse\).*lm\.adapter=json"
        ):
            evaluate(dspy.Predict("question -> answer"))
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        with pytest.raises(AllExamplesFailedError) as failed:
            evaluate(dspy.Predict("question -> answer"))
    assert "lm.adapter=json" not in str(failed.value)
