"""DSPy's API as dspylite implements it (issue 25): custom types, native LM features, the adapter
and LM call shapes, LM state safety, per-module history, settings ownership, Evaluate's DSPy options,
DSPy's BetterTogether, random search's restrict, straggler resubmission, lenient JSON reading.

Written against DSPy's documented behaviour; DSPy's own tests run through bench/dspy_tests_compat.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import threading
import time
from importlib import import_module
from typing import Any

import pytest

import dspylite as dspy
from dspylite.errors import ContextWindowExceededError, PickleNotSupportedError
from dspylite.utils import DummyLM, lenient_json

settings_module = import_module("dspylite.settings")


@pytest.fixture(autouse=True)
def _fresh_settings():
    yield
    settings_module.reset()


# ---- the adapter and LM call shapes -----------------------------------------------------------------


def test_adapter_is_called_as_dspy_calls_it_and_an_lm_overriding_call_is_honoured():
    sig = dspy.Signature("question -> answer")
    assert dspy.ChatAdapter()(DummyLM([{"answer": "Paris"}]), {}, sig, [], {"question": "q"}) == [
        {"answer": "Paris"}
    ]
    json_lm = DummyLM([{"answer": "P"}], adapter=dspy.JSONAdapter())
    assert asyncio.run(dspy.JSONAdapter().acall(json_lm, {}, sig, [], {"question": "q"})) == [{"answer": "P"}]

    class SpyLM(dspy.LM):
        def __init__(self):
            super().__init__("spy")
            self.calls = []

        def __call__(self, prompt=None, messages=None, **kwargs):
            self.calls.append((messages, kwargs))
            return ["[[ ## answer ## ]]\nfrom the spy"]

    lm = SpyLM()
    assert dspy.Predict("question -> answer", lm=lm)(question="q").answer == "from the spy"
    messages, kwargs = lm.calls[0]
    assert messages[-1]["content"].startswith("[[ ## question ## ]]\nq") and kwargs == {}


def test_predict_warns_about_input_values_of_the_wrong_type_unless_untyped(caplog):
    lm = DummyLM([{"result": "r"}] * 4)
    typed = dspy.Predict("count: int, names: list[str] -> result", lm=lm)
    with caplog.at_level(logging.WARNING):
        typed(count="seven", names=["a"])
    assert "Type mismatch for field 'count': expected int" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        typed(count=7, names=["a", "b"])
        dspy.Predict("count, name -> result", lm=lm)(count="abc", name=3)  # no types given
    assert "Type mismatch" not in caplog.text
    with dspy.context(warn_on_type_mismatch=False), caplog.at_level(logging.WARNING):
        typed(count="seven", names=["a"])
    assert "Type mismatch" not in caplog.text


def test_input_defaults_and_optional_outputs_fill_in():
    class Sig(dspy.Signature):
        context: str = dspy.InputField(default="DEFAULT_CONTEXT")
        question: str = dspy.InputField()
        answer: str = dspy.OutputField()
        note: str | None = dspy.OutputField()
        tries: int = dspy.OutputField(default=1)

    lm = DummyLM([{"answer": "a"}])
    pred = dspy.Predict(Sig, lm=lm)(question="q")
    assert "DEFAULT_CONTEXT" in lm.history[0]["messages"][-1]["content"]
    assert (pred.answer, pred.note, pred.tries) == ("a", None, 1)


def test_lm_calls_are_recorded_in_every_calling_module_history_within_limits():
    class Program(dspy.Module):
        def __init__(self):
            super().__init__()
            self.cot = dspy.ChainOfThought("question -> answer")

        def forward(self, question):
            return self.cot(question=question)

    program = Program()
    dspy.configure(lm=DummyLM([{"reasoning": "r", "answer": "a"}] * 5))
    program(question="q")
    assert len(program.history) == len(program.cot.history) == len(program.cot.predict.history) == 1
    with dspy.context(disable_history=True):
        program(question="q")
    assert len(program.cot.predict.history) == 1
    with dspy.context(max_history_size=2):
        program(question="q")
        program(question="q")
        program(question="q")
    assert len(program.history) == 2


# ---- custom types and native LM features ---------------------------------------------------------------


def test_custom_type_values_become_content_parts_and_describe_themselves():
    class Event(dspy.Type):
        label: str

        def format(self):
            return [{"type": "event", "event": {"label": self.label}}]

        @classmethod
        def description(cls):
            return "An event block."

    sig = dspy.Signature({"event": (Event, dspy.InputField()), "answer": (str, dspy.OutputField())})
    messages = dspy.ChatAdapter().format(sig, [], {"event": Event(label="launch")})
    assert "Type description of Event: An event block." in messages[0]["content"]
    assert messages[-1]["content"][1] == {"type": "event", "event": {"label": "launch"}}
    image = dspy.Image("https://example.com/cat.png")
    assert image.format() == [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    assert dspy.Image(b"\x89PNG\r\n\x1a\n").url.startswith("data:image/png;base64,")


def test_native_tool_calls_go_out_as_tools_and_come_back_as_toolcalls():
    def search(query: str, k: int = 3) -> str:
        """Search for documents."""
        return query

    class ToolLM(DummyLM):
        supports_function_calling = True

        def forward(self, prompt=None, messages=None, **kwargs):
            self.sent = kwargs
            call = {
                "id": "c1",
                "type": "function",
                "function": {"name": "search", "arguments": '{"query": "cats"}'},
            }
            return {"choices": [{"message": {"content": None, "tool_calls": [call]}}], "model": "dummy"}

    sig = dspy.Signature("question, tools: list[dspy.Tool] -> tool_calls: dspy.ToolCalls")
    lm = ToolLM([])
    pred = dspy.Predict(sig, lm=lm, adapter=dspy.ChatAdapter(use_native_function_calling=True))(
        question="q", tools=[dspy.Tool(search)]
    )
    assert lm.sent["tools"][0]["function"]["name"] == "search"
    assert lm.sent["tools"][0]["function"]["parameters"]["required"] == ["query"]
    call = pred.tool_calls.tool_calls[0]
    assert (call.id, call.name, call.args) == ("c1", "search", {"query": "cats"})
    assert call.execute(functions=[dspy.Tool(search)]) == "cats"


def test_native_reasoning_is_requested_from_an_lm_that_reasons():
    class ReasoningLM(DummyLM):
        supports_reasoning = True

    sig = dspy.Signature("question -> answer").prepend("reasoning", dspy.OutputField(), dspy.Reasoning)
    lm = ReasoningLM([{"answer": "4"}], reasoning=True)
    pred = dspy.Predict(sig, lm=lm)(question="2+2?")
    assert lm.history[0]["kwargs"]["reasoning_effort"] == "low"
    assert (
        "reasoning"
        not in lm.history[0]["messages"][0]["content"].split("Your output fields are:")[1].split("All")[0]
    )
    assert pred.reasoning == "Some reasoning" and pred.answer == "4"


def test_code_and_citations_types():
    python_code = dspy.Code["python"]
    assert python_code(code="```python\nprint(1)\n```").code == "print(1)"
    from dspylite.experimental import Citations, Document

    doc = Document(data="Alpha beta", title="Doc")
    assert doc.format()[0]["source"]["data"] == "Alpha beta"
    cites = Citations.from_dict_list(
        [{"cited_text": "alpha", "document_index": 0, "start_char_index": 0, "end_char_index": 5}]
    )
    assert cites[0].format()["cited_text"] == "alpha" and len(cites) == 1


# ---- LM state -----------------------------------------------------------------------------------------------


def test_lm_state_names_the_class_dspy_reads_and_keeps_no_endpoint_or_key_by_default():
    lm = dspy.LM("openai/gpt-4o-mini", temperature=1, max_tokens=100, num_retries=10)
    assert lm.dump_state() == {
        "_dspy_lm_class": "dspy.clients.lm.LM",
        "model": "openai/gpt-4o-mini",
        "model_type": "chat",
        "temperature": 1,
        "max_tokens": 100,
        "num_retries": 10,
        "cache": True,
        "finetuning_model": None,
        "launch_kwargs": {},
        "train_kwargs": {},
    }
    explicit = dspy.LM("m", api_base="http://host:1/v1", api_key="secret", timeout=5.0)
    state = explicit.dump_state()
    assert state["api_base"] == "http://host:1/v1" and state["timeout"] == 5.0 and "api_key" not in state
    body = explicit._build_body([{"role": "user", "content": "x"}], None, 1, dict(explicit.kwargs))
    assert "api_base" not in body  # a client setting, never a request field
    assert dspy.BaseLM.load_state(state).api_base == "http://host:1/v1"


def test_predictor_load_drops_endpoints_unless_trusted_and_imports_custom_lms_only_then(caplog):
    class CustomLM(dspy.BaseLM):
        pass

    predict = dspy.Predict("q -> a")
    predict.lm = dspy.LM("m")
    state = predict.dump_state()
    state["lm"]["base_url"] = "http://attacker:1/v1"
    with caplog.at_level(logging.WARNING):
        loaded = dspy.Predict("q -> a").load_state(state)
    assert "base_url" not in loaded.lm.kwargs and "['base_url']" in caplog.text
    assert dspy.Predict("q -> a").load_state(state, allow_unsafe_lm_state=True).lm.kwargs["base_url"]

    predict.lm = CustomLM("custom")
    state = predict.dump_state()
    assert state["lm"]["_dspy_lm_class"].endswith("CustomLM")
    with pytest.raises(ValueError, match="Refusing to import custom serialized LM class"):
        dspy.Predict("q -> a").load_state(state)


def test_a_prompt_over_the_context_window_is_its_own_error_and_react_truncates():
    assert issubclass(ContextWindowExceededError, dspy.LMError)
    from dspylite.lm import _is_context_overflow

    assert _is_context_overflow("This model's maximum context length is 2048 tokens")

    agent = dspy.ReAct("question -> answer", tools=[])
    trajectory = {
        f"{k}_{i}": "x" for i in range(2) for k in ("thought", "tool_name", "tool_args", "observation")
    }
    assert list(agent.truncate_trajectory(dict(trajectory))) == [k for k in trajectory if k.endswith("_1")]
    with pytest.raises(ContextWindowExceededError, match="only has one tool call"):
        agent.truncate_trajectory({"thought_0": 1, "tool_name_0": 2, "tool_args_0": 3, "observation_0": 4})


# ---- modules ----------------------------------------------------------------------------------------------


def test_module_structure_as_dspy_names_it():
    from dspylite.primitives.module import set_attribute_by_name

    root = dspy.Module()
    root.sub = dspy.Module()
    root.sub.items = [dspy.Module(), {"key": dspy.Module()}]
    assert {n for n, _ in root.named_sub_modules()} == {
        "self",
        "self.sub",
        "self.sub.items[0]",
        "self.sub.items[1][key]",
    }
    set_attribute_by_name(root, "sub.items[1]['key'].flag", True)
    assert root.sub.items[1]["key"].flag is True

    class Holder(dspy.Module):
        def __init__(self):
            self.lock = threading.Lock()  # cannot be deep-copied
            self.cot = dspy.ChainOfThought("q -> a")

    holder = Holder()
    copy = holder.deepcopy()
    assert copy.lock is holder.lock and copy.cot.predict is not holder.cot.predict
    assert len(holder.parameters()) == 1

    class Direct(dspy.Module):
        def forward(self, x):
            return x

    module_logger = logging.getLogger("dspylite.modules.module")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    module_logger.addHandler(handler)
    try:
        assert Direct()(x=1) == 1 and not records
        assert Direct().forward(2) == 2 and "directly is discouraged" in records[0]
    finally:
        module_logger.removeHandler(handler)


def test_signatures_survive_cloudpickle_and_append_instructions():
    cloudpickle = pytest.importorskip("cloudpickle")

    class Local(dspy.Signature):
        """Answer."""

        question: str = dspy.InputField()
        answer: str = dspy.OutputField()

    loaded = pickle.loads(cloudpickle.dumps(Local))
    assert list(loaded.fields) == ["question", "answer"] and loaded.instructions == "Answer."
    assert Local.append_instructions("Be brief.").instructions == "Answer.\n\nBe brief."
    with pytest.raises(AttributeError, match="immutable"):
        Local.instructions = "changed"


# ---- settings, evaluation, parallel ----------------------------------------------------------------------------


def test_only_the_configuring_thread_may_configure_again():
    dspy.configure(num_threads=4)
    errors: list[BaseException] = []

    def worker():
        try:
            dspy.configure(num_threads=2)
        except RuntimeError as exc:
            errors.append(exc)
        with dspy.context(num_threads=3):  # contexts are fine anywhere
            assert dspy.settings.num_threads == 3

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert errors and "can only be changed by the thread that initially configured it" in str(errors[0])
    assert dspy.settings.num_threads == 4
    with pytest.raises(PickleNotSupportedError, match="never writes pickles"):
        dspy.settings.save("settings.pkl")
    with pytest.raises(PickleNotSupportedError):
        dspy.load_settings("settings.pkl", allow_pickle=True)


def test_evaluate_with_dspy_options(tmp_path):
    calls = []

    class Recorder(dspy.utils.BaseCallback):
        def on_evaluate_start(self, call_id, instance, inputs):
            calls.append(("start", inputs["program"]))

        def on_evaluate_end(self, call_id, outputs, exception=None):
            calls.append(("end", outputs.score))

    dspy.configure(lm=DummyLM({"1+1": {"answer": "2"}, "2+2": {"answer": "5"}}), callbacks=[Recorder()])
    devset = [
        dspy.Example(question=q, answer=a, history=dspy.History(messages=[{"question": "x"}])).with_inputs(
            "question"
        )
        for q, a in (("1+1", "2"), ("2+2", "4"))
    ]
    program = dspy.Predict("question -> answer")
    evaluate = dspy.Evaluate(
        devset=devset,
        metric=dspy.evaluate.answer_exact_match,
        display_progress=False,
        save_as_json=str(tmp_path / "r.json"),
        save_as_csv=str(tmp_path / "r.csv"),
    )
    assert evaluate.num_threads is None  # the configured num_threads at call time
    result = evaluate(program)
    assert result.score == 50.0 and calls == [("start", program), ("end", 50.0)]
    example, prediction, score = result.results[0]
    assert (prediction.answer, score) == ("2", 1.0) and result.results[1][2] == 0.0
    rows = json.loads((tmp_path / "r.json").read_text())
    assert rows[1]["example_answer"] == "4" and rows[1]["pred_answer"] == "5"
    assert rows[0]["history"] == {"messages": [{"question": "x"}]} and rows[1]["answer_exact_match"] == 0.0
    assert "answer_exact_match" in (tmp_path / "r.csv").read_text().splitlines()[0]
    assert repr(dspy.EvaluationResult(score=1.0, results=[(devset[0], prediction, 1.0)])) == (
        "EvaluationResult(score=1.0, results=<list of 1 results>)"
    )


def test_semantic_f1_asks_the_lm_to_judge():
    from dspylite.evaluate.auto_evaluation import SemanticF1, f1_score

    dspy.configure(lm=DummyLM([{"reasoning": "r", "recall": 0.5, "precision": 1.0}] * 2))
    example, pred = dspy.Example(question="q", response="a b"), dspy.Prediction(response="a")
    assert SemanticF1()(example, pred).score == pytest.approx(f1_score(1.0, 0.5))
    assert SemanticF1(threshold=0.9)(example, pred, trace=True).score is False


def test_stragglers_are_started_once_more_and_the_first_run_wins():
    from dspylite.utils.parallel import parallel_map

    runs = {"slow": 0}

    def work(item):
        if item == "slow":
            runs["slow"] += 1
            if runs["slow"] == 1:
                time.sleep(2.0)  # the first run hangs; the second returns at once
                return "late"
        return item

    started = time.monotonic()
    outcomes = parallel_map(work, ["a", "slow", "b"], num_threads=3, timeout=0.2, straggler_limit=2)
    assert [o.value for o in outcomes] == ["a", "slow", "b"] and runs["slow"] == 2
    assert time.monotonic() - started < 1.5
    assert dspy.Parallel().timeout == 120 and dspy.Parallel(timeout=0, straggler_limit=5).straggler_limit == 5


# ---- optimizers ---------------------------------------------------------------------------------------------


def test_bettertogether_dspy_api_runs_steps_and_keeps_candidates():
    from dspylite.teleprompt import BetterTogether, BootstrapFewShotWithRandomSearch, BootstrapFinetune

    def metric(example, pred, trace=None):
        return float(example.answer == pred.answer)

    class Marker:
        def __init__(self, tag):
            self.tag = tag

        def compile(self, student, trainset=None, valset=None):
            program = dspy.Predict("question -> answer")
            program.set_lm(student.lm)
            program.tag = self.tag
            return program

    default = BetterTogether(metric=metric)
    assert isinstance(default.optimizers["p"], BootstrapFewShotWithRandomSearch)
    assert isinstance(default.optimizers["w"], BootstrapFinetune)
    with pytest.raises(TypeError, match="must be a Teleprompter"):
        BetterTogether(metric=metric, p="nope")
    with pytest.raises(ValueError, match="invalid optimizer keys"):
        default._prepare_strategy("p -> x")

    student = dspy.Predict("question -> answer")
    student.set_lm(DummyLM({"q": {"answer": "a"}}))
    data = [dspy.Example(question="q", answer="a").with_inputs("question")] * 3
    result = BetterTogether(metric=metric, p=Marker("p"), w=Marker("w")).compile(
        student, trainset=data, valset=data[:1], strategy="p -> w"
    )
    assert [c["strategy"] for c in result.candidate_programs] == ["", "p", "p -> w"]  # ties: earliest first
    assert result.flag_compilation_error_occurred is False and result._compiled


def test_random_search_restrict_picks_candidate_seeds():
    def metric(example, pred, trace=None):
        return float(example.answer == pred.answer)

    dspy.configure(lm=DummyLM({"q": {"answer": "a"}}))
    data = [dspy.Example(question="q", answer="a").with_inputs("question")]
    optimizer = dspy.BootstrapFewShotWithRandomSearch(metric=metric, max_bootstrapped_demos=1, progress=False)
    with pytest.raises(ValueError, match="restrict"):
        optimizer.compile(dspy.Predict("question -> answer"), trainset=data, restrict=[99])
    compiled = optimizer.compile(dspy.Predict("question -> answer"), trainset=data, restrict=iter([-3]))
    assert compiled.demos == [] and [seed for _, _, seed in optimizer.candidate_programs] == [-3]


def test_bootstrap_max_errors_stops_at_the_nth_failure():
    class Broken(dspy.Module):
        def __init__(self):
            self.p = dspy.Predict("question -> answer")

        def forward(self, question):
            raise RuntimeError("broken teacher")

    dspy.configure(lm=DummyLM([]))
    data = [dspy.Example(question="q", answer="a").with_inputs("question")]
    optimizer = dspy.BootstrapFewShot(
        max_bootstrapped_demos=1, max_labeled_demos=1, max_errors=1, progress=False
    )
    with pytest.raises(RuntimeError, match="broken teacher"):
        optimizer.compile(Broken(), teacher=Broken(), trainset=data)


# ---- reading model JSON ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": 1}', {"a": 1}),
        ("{'a': 'x'}", {"a": "x"}),
        ('```json\n{"a": [1, 2,]}\n```', {"a": [1, 2]}),
        ("{'a': true, 'b': null}", {"a": True, "b": None}),
        ('Sure: {"a": "b}"} and more {x}', {"a": "b}"}),
        ("no json", ""),
        ('{"a": 1', ""),
    ],
)
def test_lenient_json_reads_what_models_write(text: str, value: Any):
    assert lenient_json.loads(text) == value
