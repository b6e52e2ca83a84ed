"""Predict, ChainOfThought, ReAct, BestOfN/Refine and Module plumbing, with the scripted DummyLM."""

from __future__ import annotations

import threading
from importlib import import_module

import pytest

import dspylite as dspy
from dspylite.completion import Completion
from dspylite.errors import AdapterParseError, InputError, MetricError, NoLMConfiguredError, ToolError
from dspylite.example import Example
from dspylite.modules.react import Tool
from dspylite.utils import DummyLM

settings_module = import_module("dspylite.settings")


@pytest.fixture(autouse=True)
def _restore_settings():
    saved = settings_module._GLOBAL
    yield
    settings_module._GLOBAL = saved


class TwoStep(dspy.Module):
    """Extract facts with reasoning, then answer from them."""

    def __init__(self):
        self.extract = dspy.ChainOfThought("context, question -> facts")
        self.answer = dspy.Predict("facts, question -> answer: int")

    def forward(self, context, question):
        facts = self.extract(context=context, question=question).facts
        return self.answer(facts=facts, question=question)


# ---- Predict ----------------------------------------------------------------------------------------


def test_predict_returns_typed_outputs_and_records_a_full_trace():
    lm = DummyLM([{"answer": "42"}], model="base-model")
    predict = dspy.Predict("question -> answer: int", lm=lm)
    with dspy.context(example_id="ex-1", rollout_id=3), dspy.capture_traces() as traces:
        pred = predict(question="6*7?")
    assert pred.answer == 42
    (t,) = traces
    assert t.predictor_name == "self" and t.signature == "question -> answer"
    assert t.inputs == {"question": "6*7?"}
    assert t.messages == lm.history[0]["messages"]  # exactly what was sent
    assert t.completion == lm.history[0]["outputs"][0]
    assert t.model == "base-model" and t.adapter == "chat"
    assert t.outputs == {"answer": 42} and t.error is None and t.ok
    assert t.example_id == "ex-1" and t.rollout_id == 3 and lm.history[0]["rollout_id"] == 3
    assert t.to_dict()["outputs"] == {"answer": 42}


def test_parse_failure_is_traced_then_raised():
    lm = DummyLM([{"wrong": "x"}, {"wrong": "y"}])
    with dspy.capture_traces() as traces, pytest.raises(AdapterParseError) as info:
        dspy.Predict("question -> answer", lm=lm)(question="q")
    # DSPy's ChatAdapter retries with JSON; both attempts are traced, the last one's error is raised.
    assert [t.adapter for t in traces] == ["chat", "json"]
    assert traces[0].outputs is None and "Expected to find output fields" in traces[0].error
    assert traces[1].outputs is None and info.value.completion == traces[1].completion

    lm = DummyLM([{"wrong": "x"}])
    no_retry = dspy.ChatAdapter(use_json_adapter_fallback=False)
    with dspy.capture_traces() as traces, pytest.raises(AdapterParseError) as info:
        dspy.Predict("question -> answer", lm=lm, adapter=no_retry)(question="q")
    assert len(traces) == 1 and info.value.completion == traces[0].completion


def test_bad_calls_name_what_is_wrong(caplog):
    lm = DummyLM([{"answer": "a"}, {"answer": "b"}])
    predict = dspy.Predict("question, context -> answer", lm=lm)
    # As in DSPy: unknown inputs are dropped with a warning, missing ones warned about.
    assert predict(questoin="q", context="c").answer == "a"
    assert "These fields will be ignored: ['questoin']" in caplog.text
    assert "questoin" not in lm.history[0]["messages"][-1]["content"]
    assert predict(question="q").answer == "b"
    assert "Missing: ['context']" in caplog.text
    with pytest.raises(InputError, match="Positional arguments are not allowed"):
        predict("q", "c")
    with pytest.raises(NoLMConfiguredError, match="No LM is loaded"):
        dspy.Predict("question -> answer")(question="q")
    # A model name or a function is not an LM: DSPy's errors, both ValueErrors.
    with pytest.raises(ValueError, match="not a string"):
        dspy.Predict("question -> answer", lm="openai/gpt-4o")(question="q")
    with pytest.raises(ValueError, match="must be an instance of `dspy.BaseLM`"):
        dspy.Predict("question -> answer", lm=len)(question="q")


def test_optional_inputs_may_be_omitted():
    lm = DummyLM([{"answer": "ok"}])
    assert dspy.Predict("question, hint: Optional[str] -> answer", lm=lm)(question="q").answer == "ok"


def test_n_completions_config_and_context_kwargs_reach_the_lm():
    lm = DummyLM([{"answer": "a"}, {"answer": "b"}, {"answer": "c"}])
    predict = dspy.Predict("question -> answer", lm=lm, temperature=0.3)
    with dspy.context(lm_kwargs={"top_p": 0.9, "temperature": 0.0}):
        pred = predict(question="q", config={"n": 3, "max_tokens": 7})
    assert pred.completions.answer == ["a", "b", "c"]  # each choice takes its own scripted answer
    assert lm.history[0]["kwargs"] == {"top_p": 0.9, "temperature": 0.3, "max_tokens": 7, "n": 3}
    # n > 1 at a (near-)zero temperature would sample one answer n times: DSPy raises it to 0.7.
    lm = DummyLM([{"answer": "a"}, {"answer": "b"}])
    dspy.Predict("question -> answer", lm=lm, n=2)(question="q")
    assert lm.history[0]["kwargs"]["temperature"] == 0.7


def test_dummy_lm_dict_mode_and_follow_examples():
    lm = DummyLM({"capital of France": {"answer": "Paris"}, "2+2": {"answer": "4"}})
    predict = dspy.Predict("question -> answer", lm=lm)
    assert predict(question="What is the capital of France?").answer == "Paris"
    assert predict(question="2+2=?").answer == "4"
    with pytest.raises(AdapterParseError):
        predict(question="unknown")

    follow = DummyLM([{"answer": "scripted"}], follow_examples=True)
    predict = dspy.Predict(
        "question -> answer", lm=follow, demos=[Example(question="seen", answer="from demo")]
    )
    assert predict(question="seen").answer == "from demo"
    assert predict(question="seen before").answer == "scripted"  # a prefix of another input is not a match


def test_dummy_lm_answers_no_more_responses_once_its_script_runs_out():
    predict = dspy.Predict("question -> answer", lm=DummyLM([{"answer": "once"}]))
    assert predict(question="1").answer == "once"
    assert predict(question="2").answer == "No more responses"  # as DSPy's DummyLM


def test_chain_of_thought_adds_reasoning_first():
    cot = dspy.ChainOfThought("question -> answer")
    assert list(cot.predict.signature.output_fields) == ["reasoning", "answer"]
    cot.set_lm(DummyLM([{"reasoning": "because", "answer": "yes"}]))
    pred = cot(question="q")
    assert (pred.reasoning, pred.answer) == ("because", "yes")


def test_two_module_program_traces_use_dotted_names():
    lm = DummyLM([{"reasoning": "r", "facts": "x=4"}, {"answer": "4"}])
    dspy.configure(lm=lm)
    program = TwoStep()
    with dspy.capture_traces() as traces:
        assert program(context="x is 4", question="x?").answer == 4
    assert [t.predictor_name for t in traces] == ["extract.predict", "answer"]
    assert traces[1].inputs == {"facts": "x=4", "question": "x?"}
    assert [n for n, _ in program.named_predictors()] == ["extract.predict", "answer"]


def test_settings_are_context_local_across_threads():
    dspy.configure(lm=DummyLM({"q": {"answer": "global"}}))
    barrier = threading.Barrier(2)
    results: dict[str, str] = {}

    def worker(name: str):
        lm = DummyLM({"q": {"answer": name}})
        with dspy.context(lm=lm):
            barrier.wait()  # both threads are inside their own context at the same time
            results[name] = dspy.Predict("q -> answer")(q="q").answer
            barrier.wait()

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"A": "A", "B": "B"}
    assert dspy.Predict("q -> answer")(q="q").answer == "global"  # nothing leaked into this thread


def test_traces_are_captured_per_thread():
    dspy.configure(lm=DummyLM({"q": {"answer": "x"}}))
    counts: list[int] = []

    def worker():
        with dspy.capture_traces() as traces:
            for _ in range(5):
                dspy.Predict("q -> answer")(q="q")
        counts.append(len(traces))

    with dspy.capture_traces() as outer:
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert counts == [5, 5, 5, 5] and outer == []


# ---- Module plumbing -----------------------------------------------------------------------------------


def test_deepcopy_shares_lms_but_not_demos_and_reset_copy_clears():
    lm = DummyLM([])
    program = TwoStep()
    program.set_lm(lm)
    program.answer.demos = [Example(facts="f", question="q", answer=1)]
    copy = program.deepcopy()
    assert copy.answer.lm is lm and copy.extract.predict.lm is lm
    copy.answer.demos.append(Example(facts="g", question="q", answer=2))
    assert len(program.answer.demos) == 1
    assert copy.answer is not program.answer
    reset = program.reset_copy()
    assert reset.answer.demos == [] and reset.answer.lm is None
    assert program.get_lm() is lm
    program.answer.lm = DummyLM([])
    with pytest.raises(ValueError, match="Multiple LMs are being used"):
        program.get_lm()


def test_predictors_in_lists_and_dicts_are_found():
    class Many(dspy.Module):
        def __init__(self):
            self.steps = [dspy.Predict("a -> b"), dspy.Predict("b -> c")]
            self.heads = {"x": dspy.Predict("c -> d")}

    assert [n for n, _ in Many().named_predictors()] == ["steps[0]", "steps[1]", "heads['x']"]
    assert len(Many().predictors()) == 3


# ---- ReAct ----------------------------------------------------------------------------------------------


def add(a: int, b: int = 0) -> int:
    """Add two integers."""
    return a + b


def divide(a: float, b: float) -> float:
    """Divide a by b."""
    return a / b


def test_tool_describes_a_typed_function_and_checks_calls():
    tool = Tool(add)
    assert tool.name == "add" and tool.desc == "Add two integers."
    assert tool.args == {"a": {"type": "integer"}, "b": {"type": "integer", "default": 0}}
    assert tool(a="2", b=3) == 5  # coerced to the annotated type
    assert "add, whose description is <desc>Add two integers.</desc>" in str(tool)
    with pytest.raises(ToolError, match="Arg c is not in the tool's args"):
        tool(a=1, c=2)
    with pytest.raises(ToolError, match="Arg a is invalid"):
        tool(a="x")
    assert tool.format_as_litellm_function_call()["function"]["parameters"]["required"] == ["a"]


def test_react_runs_tools_feeds_errors_back_and_keeps_the_trajectory():
    lm = DummyLM(
        [
            {"next_thought": "add first", "next_tool_name": "add", "next_tool_args": {"a": "2", "b": 3}},
            {"next_thought": "now divide", "next_tool_name": "divide", "next_tool_args": {"a": 5, "b": 0}},
            {"next_thought": "oops, retry", "next_tool_name": "divide", "next_tool_args": {"a": 5, "b": 2}},
            {"next_thought": "done", "next_tool_name": "finish", "next_tool_args": {}},
            {"reasoning": "5 / 2", "answer": "2.5"},
        ]
    )
    agent = dspy.ReAct("question -> answer: float", tools=[add, divide], max_iters=6)
    agent.set_lm(lm)
    with dspy.capture_traces() as traces:
        pred = agent(question="(2+3)/2?")
    assert pred.answer == 2.5 and pred.reasoning == "5 / 2"
    traj = pred.trajectory
    assert traj["tool_name_0"] == "add" and traj["observation_0"] == 5
    assert traj["observation_1"].startswith("Execution error in divide: \nTraceback (most recent call last):")
    assert traj["observation_1"].endswith("ZeroDivisionError: float division by zero")
    assert traj["observation_2"] == 2.5 and traj["tool_name_3"] == "finish"
    assert [t.predictor_name for t in traces] == ["react"] * 4 + ["extract.predict"]
    # The model saw the previous steps, including the error, in its trajectory input.
    assert "ZeroDivisionError" in traces[2].inputs["trajectory"]
    assert traces[-1].inputs["trajectory"].count("[[ ## observation_") == 4
    react_sig = agent.react.signature
    assert list(react_sig.output_fields) == ["next_thought", "next_tool_name", "next_tool_args"]
    assert "(1) add, whose description is" in react_sig.instructions
    assert [n for n, _ in agent.named_predictors()] == ["react", "extract.predict"]


def test_react_rejects_unknown_tool_names_and_stops_at_max_iters():
    lm = DummyLM(
        [
            {
                "next_thought": "?",
                "next_tool_name": "search",
                "next_tool_args": {},
            },  # not a tool: parse error
            {"reasoning": "r", "answer": "none"},
        ]
    )
    agent = dspy.ReAct("question -> answer", tools=[add])
    agent.set_lm(lm)
    with dspy.context(adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):
        pred = agent(question="q")
    assert pred.trajectory == {} and pred.answer == "none"

    looping = DummyLM(
        [{"next_thought": "t", "next_tool_name": "add", "next_tool_args": {"a": 1}}] * 2
        + [{"reasoning": "r", "answer": "2"}]
    )
    agent = dspy.ReAct("question -> answer", tools=[Tool(add)], max_iters=2)
    agent.set_lm(looping)
    pred = agent(question="q")
    assert sorted(k for k in pred.trajectory if k.startswith("tool_name")) == ["tool_name_0", "tool_name_1"]
    with pytest.raises(ValueError, match="unique and not 'finish'"):
        dspy.ReAct("q -> a", tools=[add, add])


# ---- BestOfN / Refine -----------------------------------------------------------------------------------


def test_best_of_n_uses_distinct_rollouts_at_temperature_and_returns_first_passing():
    lm = DummyLM([{"answer": "no"}, {"answer": "yes"}, {"answer": "unused"}])
    qa = dspy.Predict("question -> answer", lm=lm)
    best = dspy.BestOfN(qa, N=3, reward_fn=lambda args, pred: float(pred.answer == "yes"), threshold=1.0)
    with dspy.capture_traces() as traces:
        pred = best(question="q")
    assert pred.answer == "yes"
    assert [h["rollout_id"] for h in lm.history] == [0, 1]
    assert all(h["kwargs"]["temperature"] == 1.0 for h in lm.history)
    # Only the returned attempt reaches the caller's traces.
    assert len(traces) == 1 and traces[0].outputs == {"answer": "yes"} and traces[0].rollout_id == 1
    assert traces[0].predictor_name == "module"
    assert [a.reward for a in best.last_attempts] == [0.0, 1.0]


def test_best_of_n_returns_best_below_threshold_and_keeps_nonzero_temperature():
    lm = DummyLM([{"answer": "aa"}, {"answer": "aaaa"}, {"answer": "a"}])
    best = dspy.BestOfN(
        dspy.Predict("q -> answer", lm=lm), N=3, reward_fn=lambda a, p: len(p.answer), threshold=10
    )
    with dspy.context(lm_kwargs={"temperature": 0.7}, rollout_id=2):
        assert best(q="x").answer == "aaaa"
    assert [h["rollout_id"] for h in lm.history] == [6, 7, 8]  # outer rollout 2 -> ids 2*N + i
    assert {h["kwargs"]["temperature"] for h in lm.history} == {0.7}


def test_best_of_n_counts_failures_and_raises_after_fail_count():
    no_retry = dspy.ChatAdapter(use_json_adapter_fallback=False)  # one scripted answer per attempt
    lm = DummyLM([{"wrong": "x"}, {"answer": "ok"}])
    best = dspy.BestOfN(
        dspy.Predict("q -> answer", lm=lm, adapter=no_retry), N=3, reward_fn=lambda a, p: 1.0, threshold=1.0
    )
    assert best(q="x").answer == "ok"  # one parse failure, then a success

    lm = DummyLM([{"wrong": "x"}, {"wrong": "y"}, {"answer": "never reached"}])
    best = dspy.BestOfN(
        dspy.Predict("q -> answer", lm=lm, adapter=no_retry),
        N=3,
        reward_fn=lambda a, p: 1.0,
        threshold=1.0,
        fail_count=1,
    )
    with pytest.raises(AdapterParseError):  # DSPy's budget: fail_count=1 tolerates one failure
        best(q="x")
    assert len(lm.history) == 2

    def crashing_reward(args, pred):
        raise RuntimeError("reward crashed")

    lm = DummyLM([{"answer": "a"}] * 3)
    best = dspy.BestOfN(dspy.Predict("q -> answer", lm=lm), N=3, reward_fn=crashing_reward, threshold=1.0)
    with pytest.raises(RuntimeError, match="reward crashed"):
        best(q="x")
    assert len(lm.history) == 3


def test_best_of_n_reward_must_be_a_number():
    best = dspy.BestOfN(
        dspy.Predict("q -> answer", lm=DummyLM([{"answer": "a"}])),
        N=2,
        reward_fn=lambda a, p: "great",
        threshold=1.0,
    )
    with pytest.raises(MetricError, match="reward_fn: metric returned str"):
        best(q="x")


def test_refine_passes_feedback_to_the_next_attempt_without_changing_the_program():
    lm = DummyLM([{"answer": "short"}, {"answer": "a much longer answer"}])
    qa = dspy.Predict("question -> answer", lm=lm)
    original = qa.signature
    refine = dspy.Refine(qa, N=2, reward_fn=lambda a, p: float(len(p.answer) > 10), threshold=1.0)
    assert refine(question="q").answer == "a much longer answer"
    first_system = lm.history[0]["messages"][0]["content"]
    second_system = lm.history[1]["messages"][0]["content"]
    assert "Feedback" not in first_system
    assert "Feedback on a previous attempt: it scored 0, below the target 1" in second_system
    assert "short" in second_system
    assert qa.signature is original


# ---- misc ----------------------------------------------------------------------------------------------


def test_a_custom_lm_only_needs_generate():
    class Echo:
        model = "echo"

        def generate(self, messages, *, n=1, rollout_id=None, **kwargs):
            return [Completion(text="[[ ## answer ## ]]\nechoed", model=self.model)] * n

        def copy(self, **overrides):
            return self

        def dump_state(self):
            return {"model": self.model}

    assert dspy.Predict("q -> answer", lm=Echo())(q="x").answer == "echoed"
