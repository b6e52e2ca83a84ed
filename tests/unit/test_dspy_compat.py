"""DSPy compatibility: code written against DSPy's public API runs on dspylite (``import dspylite as dspy``).

Each test uses DSPy's documented names, paths and call shapes; the scripted DummyLM stands in for a
model (formatting, parsing and control flow only).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from dataclasses import dataclass

import pytest

import dspylite as dspy
from dspylite.errors import EvaluationError, PickleNotSupportedError, ProgramStateError
from dspylite.utils.dummies import DummyLM


@pytest.fixture(autouse=True)
def fresh_settings():
    settings_module = importlib.import_module("dspylite.settings")
    saved = settings_module._GLOBAL
    yield
    settings_module._GLOBAL = saved


# ---- 1. module paths --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "names"),
    [
        (
            "dspylite.teleprompt",
            [
                "BootstrapFewShot",
                "LabeledFewShot",
                "BootstrapFewShotWithRandomSearch",
                "MIPROv2",
                "Teleprompter",
            ],
        ),
        ("dspylite.teleprompt.bootstrap", ["BootstrapFewShot"]),
        ("dspylite.predict", ["Predict", "ChainOfThought", "ReAct", "BestOfN", "Refine", "Parallel"]),
        ("dspylite.predict.react", ["ReAct", "Tool"]),
        ("dspylite.predict.refine", ["Refine"]),
        ("dspylite.predict.chain_of_thought", ["ChainOfThought"]),
        ("dspylite.predict.best_of_n", ["BestOfN"]),
        ("dspylite.predict.predict", ["Predict"]),
        ("dspylite.predict.parallel", ["Parallel"]),
        ("dspylite.predict.aggregation", ["majority"]),
        ("dspylite.primitives", ["Example", "Prediction", "Module"]),
        ("dspylite.primitives.prediction", ["Prediction", "Completions"]),
        ("dspylite.evaluate", ["Evaluate", "answer_exact_match", "answer_passage_match"]),
        ("dspylite.evaluate.evaluate", ["Evaluate"]),
        ("dspylite.evaluate.metrics", ["answer_exact_match", "answer_passage_match"]),
        ("dspylite.adapters.chat_adapter", ["ChatAdapter"]),
        ("dspylite.adapters.json_adapter", ["JSONAdapter"]),
        ("dspylite.adapters.xml_adapter", ["XMLAdapter"]),
        ("dspylite.adapters.utils", ["parse_value", "format_field_value"]),
        ("dspylite.adapters.types", ["History", "Image", "Tool"]),
        ("dspylite.clients", ["LM", "BaseLM"]),
        ("dspylite.clients.lm", ["LM"]),
        ("dspylite.clients.base_lm", ["BaseLM"]),
        ("dspylite.utils.dummies", ["DummyLM"]),
        ("dspylite.utils.callback", ["BaseCallback", "with_callbacks"]),
        ("dspylite.utils.saving", ["load"]),
        ("dspylite.signatures.signature", ["Signature", "InputField", "OutputField", "infer_prefix"]),
    ],
)
def test_dspy_module_paths_export_the_real_implementations(path, names):
    module = importlib.import_module(path)
    for name in names:
        assert getattr(module, name) is not None
    # Re-exports are the same objects as the top-level names, not look-alikes.
    for name in set(names) & set(dir(dspy)):
        assert getattr(module, name) is getattr(dspy, name)


def test_every_optimizer_is_a_teleprompter_and_programs_are_not():
    from dspylite.teleprompt import BootstrapFewShot, LabeledFewShot, Teleprompter

    assert isinstance(BootstrapFewShot(metric=lambda e, p, t=None: 1.0), Teleprompter)
    assert isinstance(LabeledFewShot(k=2), Teleprompter)
    assert not isinstance(dspy.Predict("q -> a"), Teleprompter)

    class MyOptimizer(Teleprompter):
        def compile(self, student, *, trainset, teacher=None, valset=None, **kwargs):
            return student

    program = dspy.Predict("q -> a")
    assert MyOptimizer().compile(program, trainset=[]) is program
    assert MyOptimizer().get_params() == {}


# ---- metrics ---------------------------------------------------------------------------------------


def test_answer_exact_match_and_passage_match_follow_dspy_semantics():
    from dspylite.evaluate.metrics import answer_exact_match, answer_passage_match

    example = dspy.Example(question="q", answer="The Eiffel Tower")
    assert answer_exact_match(example, dspy.Prediction(answer="eiffel tower!"))  # articles, case, punctuation
    assert not answer_exact_match(example, dspy.Prediction(answer="Eiffel"))
    assert answer_exact_match(example, dspy.Prediction(answer="Eiffel"), frac=0.5)  # token F1 2/3 >= 0.5
    assert answer_exact_match(
        dspy.Example(answer=["Paris", "paris, france"]), dspy.Prediction(answer="PARIS")
    )

    passages = ["The tower stands in Paris, France.", "Unrelated text."]
    assert answer_passage_match(dspy.Example(answer="paris france"), dspy.Prediction(context=passages))
    # Whole tokens only: "par" is inside "paris" but is not a token run of the passage.
    assert not answer_passage_match(dspy.Example(answer="par"), dspy.Prediction(context=passages))


def test_evaluate_calls_a_two_argument_metric_and_scores_it():
    lm = DummyLM({"2+2": {"answer": "4"}, "3+3": {"answer": "6"}})
    devset = [
        dspy.Example(question=q, answer=a).with_inputs("question") for q, a in [("2+2", "4"), ("3+3", "7")]
    ]

    def two_arg_metric(example, pred):
        return example.answer == pred.answer

    def three_arg_metric_with_default(example, pred, trace=None):
        assert trace is None
        return example.answer == pred.answer

    program = dspy.Predict("question -> answer", lm=lm)
    for metric in (two_arg_metric, three_arg_metric_with_default):
        result = dspy.Evaluate(devset=devset, metric=metric, display_progress=False)(program)
        assert result.score == 50.0
        assert result.error_counts == {}


def test_evaluate_raises_when_the_metric_raises_on_every_example():
    lm = DummyLM({"2+2": {"answer": "4"}})
    devset = [dspy.Example(question="2+2", answer="4").with_inputs("question")] * 3

    def wrong_field(example, pred):
        return example.answer == pred.final_answer  # no such output field

    with pytest.raises(EvaluationError, match="metric raised on all 3 examples"):
        dspy.Evaluate(devset=devset, metric=wrong_field, display_progress=False)(
            dspy.Predict("question -> answer", lm=lm)
        )


def test_optimizers_call_the_metric_with_a_trace():
    from dspylite.teleprompt import BootstrapFewShot

    seen_traces = []

    def metric(example, pred, trace=None):
        seen_traces.append(trace)
        return True

    lm = DummyLM({"2+2": {"answer": "4"}, "3+3": {"answer": "6"}})
    trainset = [
        dspy.Example(question=q, answer=a).with_inputs("question") for q, a in [("2+2", "4"), ("3+3", "6")]
    ]
    BootstrapFewShot(metric=metric, max_bootstrapped_demos=2).compile(
        dspy.Predict("question -> answer", lm=lm), trainset=trainset
    )
    assert seen_traces and all(trace is not None for trace in seen_traces)


# ---- 2. names ----------------------------------------------------------------------------------


def test_infer_prefix_is_dspys():
    assert dspy.infer_prefix("some_field") == "Some Field"
    assert dspy.infer_prefix("camelCaseName") == "Camel Case Name"
    assert dspy.infer_prefix("question2") == "Question 2"
    assert dspy.infer_prefix("URL_path") == "URL Path"


class EchoLM(dspy.BaseLM):
    """A custom LM in DSPy's documented shape: forward returns an OpenAI-style response."""

    def __init__(self):
        super().__init__(model="echo/test")
        self.calls = []

    def forward(self, prompt=None, messages=None, **kwargs):
        self.calls.append(kwargs)
        n = kwargs.get("n", 1)

        @dataclass
        class Message:
            content: str

        @dataclass
        class Choice:
            message: Message
            finish_reason: str = "stop"

        @dataclass
        class Response:
            choices: list
            usage: dict
            model: str = "echo/test"

        return Response(
            choices=[
                Choice(Message(f"[[ ## answer ## ]]\nreply {i}\n\n[[ ## completed ## ]]")) for i in range(n)
            ],
            usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        )


def test_base_lm_subclass_plugs_into_predict_and_tracks_usage():
    lm = EchoLM()
    assert isinstance(lm, dspy.BaseLM) and isinstance(DummyLM([]), dspy.BaseLM)
    dspy.configure(lm=lm, track_usage=True)
    pred = dspy.Predict("question -> answer")(question="hi")
    assert pred.answer == "reply 0"
    assert pred.get_lm_usage() == {
        "echo/test": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    }
    many = dspy.Predict("question -> answer", n=2)(question="hi")
    assert many.completions.answer == ["reply 0", "reply 1"]
    assert lm.calls[-1]["n"] == 2
    assert lm("plain prompt") == ["[[ ## answer ## ]]\nreply 0\n\n[[ ## completed ## ]]"]
    assert "reply 0" in lm.inspect_history(1)


def test_track_usage_sums_per_model_inside_a_block():
    lm = EchoLM()
    with dspy.context(lm=lm), dspy.track_usage() as tracker:
        dspy.Predict("question -> answer")(question="a")
        dspy.Predict("question -> answer")(question="b")
    assert tracker.get_total_tokens() == {
        "echo/test": {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16}
    }


def test_inspect_history_prints_the_last_calls(capsys):
    lm = EchoLM()
    dspy.Predict("question -> answer", lm=lm)(question="what is shown?")
    text = dspy.inspect_history(n=1)
    assert "what is shown?" in text and "reply 0" in text
    assert "what is shown?" in capsys.readouterr().out


def test_history_renders_prior_turns_as_user_and_assistant_messages():
    lm = DummyLM([{"answer": "Berlin"}])

    class QA(dspy.Signature):
        question: str = dspy.InputField()
        history: dspy.History = dspy.InputField()
        answer: str = dspy.OutputField()

    history = dspy.History(messages=[{"question": "Capital of France?", "answer": "Paris"}])
    pred = dspy.Predict(QA, lm=lm)(question="Capital of Germany?", history=history)
    assert pred.answer == "Berlin"
    messages = lm.history[0]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert "Capital of France?" in messages[1]["content"]
    assert "Paris" in messages[2]["content"] and "[[ ## answer ## ]]" in messages[2]["content"]
    assert "Capital of Germany?" in messages[3]["content"]
    assert "Capital of France?" not in messages[3]["content"]  # the history is not repeated in the new turn


def test_history_also_works_from_an_examples_dict_form_in_evaluate():
    lm = DummyLM([{"answer": "Berlin"}])
    history = dspy.History(messages=[{"question": "Capital of France?", "answer": "Paris"}])
    devset = [
        dspy.Example(question="Capital of Germany?", history=history, answer="Berlin").with_inputs(
            "question", "history"
        )
    ]
    program = dspy.Predict("question, history: dspy.History -> answer", lm=lm)
    result = dspy.Evaluate(devset=devset, metric=lambda e, p: e.answer == p.answer, display_progress=False)(
        program
    )
    assert result.score == 100.0
    assert [m["role"] for m in lm.history[0]["messages"]] == ["system", "user", "assistant", "user"]


def test_image_becomes_an_openai_image_content_part(tmp_path):
    png = tmp_path / "dot.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 8)
    lm = DummyLM([{"answer": "a dot"}])
    pred = dspy.Predict("photo: dspy.Image, question -> answer", lm=lm)(
        photo=dspy.Image.from_file(png), question="what?"
    )
    assert pred.answer == "a dot"
    content = lm.history[0]["messages"][-1]["content"]
    assert isinstance(content, list)
    image_parts = [p for p in content if p["type"] == "image_url"]
    assert len(image_parts) == 1 and image_parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert any(p["type"] == "text" and "what?" in p["text"] for p in content)
    assert dspy.Image("https://example.com/cat.jpg").format() == [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
    ]
    with pytest.raises(ValueError, match="Local files must be loaded with Image.from_path"):
        dspy.Image("no-such-file-or-url")  # construction never reads files (model output may build an Image)


def test_parallel_and_batch_keep_order_and_report_failures():
    lm = DummyLM({"alpha": {"answer": "A"}, "beta": {"answer": "B"}, "gamma": {"answer": "C"}})
    predict = dspy.Predict("question -> answer", lm=lm)
    words = ["alpha", "beta", "gamma"]
    pairs = [(predict, dspy.Example(question=q).with_inputs("question")) for q in words]
    assert [p.answer for p in dspy.Parallel(num_threads=3, disable_progress_bar=True)(pairs)] == [
        "A",
        "B",
        "C",
    ]
    batch = predict.batch([{"question": q} for q in reversed(words)], disable_progress_bar=True)
    assert [p.answer for p in batch] == ["C", "B", "A"]

    class Fails(dspy.Module):
        def forward(self, value):
            if value == 2:
                raise ValueError("two")
            return value * 10

    examples = [dspy.Example(value=v).with_inputs("value") for v in (1, 2, 3)]
    results, failed, errors = Fails().batch(examples, return_failed_examples=True, disable_progress_bar=True)
    assert results == [10, None, 30] and failed == [examples[1]] and str(errors[0]) == "two"
    with pytest.raises(dspy.errors.ParallelError, match="max_errors=0"):
        Fails().batch(examples, max_errors=0, disable_progress_bar=True)


def test_acall_aforward_and_asyncify():
    lm = DummyLM({"x": {"answer": "X"}})
    predict = dspy.Predict("question -> answer", lm=lm)

    class AsyncProgram(dspy.Module):
        def __init__(self):
            self.predict = predict

        async def aforward(self, question):
            pred = await self.predict.acall(question=question)
            return dspy.Prediction(answer=pred.answer.lower())

    assert asyncio.run(predict.acall(question="x")).answer == "X"
    assert asyncio.run(AsyncProgram().acall(question="x")).answer == "x"
    assert asyncio.run(dspy.asyncify(predict)(question="x")).answer == "X"


def test_majority_picks_the_most_common_normalized_answer():
    pred = dspy.Prediction.from_completions([{"answer": "Paris"}, {"answer": "Lyon"}, {"answer": "paris."}])
    assert dspy.majority(pred).answer == "Paris"
    tie = dspy.Prediction.from_completions([{"answer": "a1"}, {"answer": "b1"}])
    assert dspy.majority(tie).answer == "a1"  # earlier completion wins a tie


def test_xml_adapter_formats_and_parses_tags():
    adapter = dspy.XMLAdapter()
    sig = dspy.Signature("question, context -> answer: int, note")
    messages = adapter.format(sig, [], {"question": "how many?", "context": "three apples"})
    assert "<question>\nhow many?\n</question>" in messages[-1]["content"]
    assert adapter.parse(sig, "noise <answer>3</answer>\n<note>\nfine\n</note>") == {
        "answer": 3,
        "note": "fine",
    }
    with pytest.raises(
        dspy.AdapterParseError, match=r"Expected to find output fields in the LM response: \[answer, note\]"
    ):
        adapter.parse(sig, "<answer>3</answer>")
    lm = DummyLM([{"answer": 7, "note": "ok"}], adapter=adapter)
    assert dspy.Predict(sig, lm=lm, adapter=adapter)(question="q", context="c").answer == 7


def test_callbacks_from_configure_and_adapter_see_module_lm_and_adapter_calls():
    events = []

    class Recorder(dspy.utils.BaseCallback):
        def on_module_start(self, call_id, instance, inputs):
            events.append(("module_start", type(instance).__name__, inputs.get("kwargs")))

        def on_module_end(self, call_id, outputs, exception=None):
            events.append(("module_end", outputs.answer))

        def on_lm_start(self, call_id, instance, inputs):
            events.append(("lm_start",))

        def on_adapter_format_start(self, call_id, instance, inputs):
            events.append(("format_start",))

        def on_adapter_parse_end(self, call_id, outputs, exception=None):
            events.append(("parse_end", outputs))

    lm = DummyLM([{"answer": "42"}])
    dspy.configure(callbacks=[Recorder()])
    dspy.Predict("question -> answer", lm=lm)(question="?")
    assert events[0] == ("module_start", "Predict", {"question": "?"})
    assert ("format_start",) in events and ("parse_end", {"answer": "42"}) in events
    assert events[-1] == ("module_end", "42")

    dspy.configure(callbacks=[])
    events.clear()
    adapter = dspy.ChatAdapter(callbacks=[Recorder()], use_native_function_calling=False)
    dspy.Predict("question -> answer", lm=DummyLM([{"answer": "1"}]), adapter=adapter)(question="?")
    assert [e[0] for e in events] == ["format_start", "parse_end"]  # only the adapter's own callbacks


def test_settings_dspy_code_reads():
    assert dspy.settings.max_trace_size == 10_000 and dspy.settings.warn_on_type_mismatch is True
    lm = DummyLM([{"answer": "a"}])
    predict = dspy.Predict("question -> answer", lm=lm)
    with dspy.context(trace=[]):
        pred = predict(question="q")
        trace = dspy.settings.trace
        assert trace == [(predict, {"question": "q"}, pred)]
    with dspy.context(trace=[], max_trace_size=1):
        predict2 = dspy.Predict("question -> answer", lm=DummyLM([{"answer": "1"}, {"answer": "2"}]))
        predict2(question="x")
        predict2(question="y")
        assert [t[1]["question"] for t in dspy.settings.trace] == ["y"]


def test_save_program_and_allow_pickle_refuse_with_a_way_out(tmp_path):
    program = dspy.Predict("question -> answer")
    with pytest.raises(PickleNotSupportedError, match=r"program.save\('program.json'\)"):
        program.save(tmp_path / "prog", save_program=True)
    with pytest.raises(PickleNotSupportedError, match="never writes pickles"):
        program.save(tmp_path / "program.pkl")
    path = program.save(tmp_path / "program.json")
    program.load(path, allow_pickle=True)  # DSPy's flag only concerns .pkl files
    (tmp_path / "program.pkl").write_bytes(b"not read")
    with pytest.raises(PickleNotSupportedError, match="never pickles"):
        program.load(tmp_path / "program.pkl", allow_pickle=True)
    with pytest.raises(PickleNotSupportedError):
        dspy.load(tmp_path, allow_pickle=True)
    assert isinstance(PickleNotSupportedError("x"), ProgramStateError)


class TwoStep(dspy.Module):
    def __init__(self):
        self.first = dspy.Predict("question -> draft")
        self.second = dspy.ChainOfThought("draft -> answer")


def test_dspy_load_rebuilds_a_program_from_its_json_state(tmp_path):
    program = TwoStep()
    program.first.demos = [dspy.Example(question="q", draft="d")]
    path = program.save(tmp_path / "two_step.json")
    loaded = dspy.load(path)
    assert isinstance(loaded, TwoStep)
    assert loaded.first.demos[0]["draft"] == "d"

    class NeedsArgs(dspy.Module):
        def __init__(self, k):
            self.p = dspy.Predict("a -> b")

    path = NeedsArgs(1).save(tmp_path / "needs.json")
    with pytest.raises(ProgramStateError, match="program.load"):
        dspy.load(path)


# ---- 4. behaviour ------------------------------------------------------------------------------


@dataclass
class Product:
    name: str
    price: float


def test_string_signatures_resolve_custom_types_from_the_callers_scope():
    class Review:  # a local class, visible only in this function
        pass

    sig = dspy.Signature("product: Product, review: Review -> verdict: bool")
    assert sig.input_fields["product"].annotation is Product
    assert sig.input_fields["review"].annotation is Review
    with pytest.raises(dspy.errors.SignatureError, match="unknown type 'Missing'"):
        dspy.Signature("x: Missing -> y")


def test_len_example_ignores_dspy_keys_and_named_sub_modules_names_self():
    assert len(dspy.Example(a=1, b=2, dspy_uuid="x", dspy_split="train")) == 2
    names = [name for name, _ in TwoStep().named_sub_modules()]
    assert names[0] == "self"
    assert "self.first" in names and "self.second" in names
    assert [name for name, _ in TwoStep().named_predictors()] == ["first", "second.predict"]


def test_dummy_lm_n2_returns_distinct_scripted_answers():
    lm = DummyLM([{"answer": "one"}, {"answer": "two"}])
    pred = dspy.Predict("question -> answer", lm=lm, n=2)(question="q")
    assert pred.completions.answer == ["one", "two"]


def test_best_of_n_and_refine_fail_count_as_dspy():
    calls = []

    class AlwaysFails(dspy.Module):
        def forward(self, question):
            calls.append(question)
            raise ValueError("boom")

    for module_cls in (dspy.BestOfN, dspy.Refine):
        calls.clear()
        module = module_cls(
            module=AlwaysFails(), N=3, reward_fn=lambda a, p: 1.0, threshold=1.0, fail_count=1
        )
        for _ in range(2):  # the budget is per call, never spent across calls
            before = len(calls)
            with pytest.raises(ValueError, match="boom"):
                module(question="q")
            assert len(calls) - before == 2  # one failure tolerated, the second raises
        calls.clear()
        with pytest.raises(ValueError):  # fail_count=0: the first error is raised
            module_cls(module=AlwaysFails(), N=3, reward_fn=lambda a, p: 1.0, threshold=1.0, fail_count=0)(
                question="q"
            )
        assert len(calls) == 1
        calls.clear()
        with pytest.raises(ValueError):  # default budget N: every attempt fails, the last error is raised
            module_cls(module=AlwaysFails(), N=3, reward_fn=lambda a, p: 1.0, threshold=1.0)(question="q")
        assert len(calls) == 3


def test_extra_and_missing_inputs_warn_like_dspy(caplog):
    lm = DummyLM([{"answer": "a"}, {"answer": "b"}])
    predict = dspy.Predict("question, context -> answer", lm=lm)
    with caplog.at_level(logging.WARNING):
        assert predict(question="q", context="c", extra="x").answer == "a"
        assert predict(question="q").answer == "b"
    assert "Input contains fields not in signature. These fields will be ignored: ['extra']" in caplog.text
    assert "Missing: ['context']" in caplog.text
