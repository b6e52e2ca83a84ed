"""Program state: JSON save/load, DSPy's layout both ways, LM/adapter bindings, bad files."""

from __future__ import annotations

import json
import os
from importlib import import_module
from pathlib import Path

import pytest

import dspylite as dspy
from dspylite.errors import ProgramStateError
from dspylite.example import Example
from dspylite.lm import LM
from dspylite.utils import DummyLM

settings_module = import_module("dspylite.settings")
DSPY_FIXTURE = Path(__file__).resolve().parents[1] / "data" / "dspy_program_state.json"
PREDICTOR_KEYS = {"traces", "train", "demos", "signature", "lm"}


@pytest.fixture(autouse=True)
def _restore_settings():
    saved = settings_module._GLOBAL
    yield
    settings_module._GLOBAL = saved


class FactQA(dspy.Module):
    """The program the DSPy fixture was saved from: a ChainOfThought, then a Predict."""

    def __init__(self):
        self.extract = dspy.ChainOfThought("context, question -> facts")
        self.answer = dspy.Predict("facts, question -> answer: int")

    def forward(self, context, question):
        facts = self.extract(context=context, question=question).facts
        return self.answer(facts=facts, question=question)


def tuned_program() -> FactQA:
    program = FactQA()
    program.extract.predict.signature = program.extract.predict.signature.with_instructions("Copy facts.")
    program.extract.predict.demos = [
        Example(context="a=1. b=2.", question="a?", reasoning="r", facts="a=1.", augmented=True),
    ]
    program.answer.demos = [Example(facts="a=1.", question="a?", answer=1)]
    return program


# ---- round trip -------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    program = tuned_program()
    path = program.save(tmp_path / "program.json")
    loaded = FactQA().load(path)
    assert loaded.extract.predict.signature.instructions == "Copy facts."
    # As in DSPy, loaded demos are plain dicts (equal to what was saved).
    assert loaded.extract.predict.demos == [d.toDict() for d in program.extract.predict.demos]
    assert loaded.answer.demos[0]["answer"] == 1
    assert loaded.answer.signature.output_fields["answer"].annotation is int  # types come from the code
    assert loaded.dump_state() == program.dump_state()


def test_saved_file_has_dspy_layout(tmp_path):
    program = tuned_program()
    program.answer.lm = DummyLM([]).copy(model="adapter-1")
    data = json.loads(program.save(tmp_path / "p.json").read_text())
    fixture = json.loads(DSPY_FIXTURE.read_text())
    assert set(data) == set(fixture) == {"extract.predict", "answer", "metadata"}
    for name in ("extract.predict", "answer"):
        assert set(data[name]) == set(fixture[name]) == PREDICTOR_KEYS
        assert set(data[name]["signature"]) == {"instructions", "fields"}
        for field in data[name]["signature"]["fields"]:
            assert set(field) == {"prefix", "description"}
        assert all(isinstance(d, dict) for d in data[name]["demos"])
    assert len(data["extract.predict"]["signature"]["fields"]) == len(
        fixture["extract.predict"]["signature"]["fields"]
    )
    assert data["extract.predict"]["signature"]["fields"][0] == {
        "prefix": "Context:",
        "description": "${context}",
    }
    assert data["extract.predict"]["demos"][0]["augmented"] is True
    assert data["extract.predict"]["lm"] is None
    assert data["answer"]["lm"]["model"] == "adapter-1" and data["answer"]["lm"]["model_type"] == "chat"
    # DSPy looks every dependency_versions key up in its own table: only keys it knows may appear.
    assert set(data["metadata"]["dependency_versions"]) <= {"python", "dspy", "cloudpickle"}


def test_dspy_saved_state_loads_into_the_equivalent_program():
    dspy.configure(lm=DummyLM([], model="base"))
    program = FactQA().load(DSPY_FIXTURE)
    extract, answer = program.extract.predict, program.answer
    assert extract.signature.instructions == "Copy the sentences from the context that the question needs."
    assert extract.signature.fields["facts"].desc == "only sentences copied from the context"
    assert extract.signature.fields["context"].desc == ""  # DSPy's "${context}" placeholder means none
    assert extract.signature.fields["reasoning"].prefix == "Reasoning: Let's think step by step in order to"
    assert len(extract.demos) == 2 and extract.demos[0]["augmented"] is True
    assert extract.demos[1]["facts"] == "Tomas is 41 years old."
    assert answer.signature.instructions == "Answer with a single integer taken from the facts."
    # The bound LM is restored against the configured one, with the saved model and sampling settings.
    assert answer.lm.model == "openai/factqa-sft-3" and answer.lm.kwargs["max_tokens"] == 256
    assert extract.lm is None
    # And the loaded program runs, sending the saved instructions and demos.
    script = DummyLM([{"reasoning": "r", "facts": "Ann has 2 dogs."}, {"answer": "2"}])
    program.extract.predict.lm = script
    answer.lm = script
    with dspy.capture_traces() as traces:
        assert program(context="Ann has 2 dogs.", question="How many dogs?").answer == 2
    system = traces[0].messages[0]["content"]
    assert "Copy the sentences from the context" in system
    users = [m["content"] for m in traces[0].messages if m["role"] == "user"]
    # As DSPy orders them: the demo missing a field (no reasoning) first, marked incomplete.
    assert users[0].startswith("This is an example of the task, though some input or output fields are not")
    assert users[1].startswith("[[ ## context ## ]]\nMira owns 3 cats.")
    # Re-saving keeps the file in the same layout with the same content.
    resaved = program.dump_state()
    fixture = json.loads(DSPY_FIXTURE.read_text())
    assert resaved["extract.predict"]["signature"] == fixture["extract.predict"]["signature"]
    assert resaved["extract.predict"]["demos"] == fixture["extract.predict"]["demos"]


def test_dspy_lm_state_without_configured_lm_builds_an_lm_and_drops_dspy_only_keys():
    program = FactQA().load(DSPY_FIXTURE)
    lm = program.answer.lm
    assert isinstance(lm, LM) and lm.model == "openai/factqa-sft-3" and lm.served_model == "factqa-sft-3"
    assert lm.temperature == 0.0 and lm.max_tokens == 256
    assert not {"finetuning_model", "launch_kwargs", "train_kwargs", "_dspy_lm_class"} & set(lm.kwargs)


# ---- bindings survive save/load ----------------------------------------------------------------------


def test_dummy_lm_binding_survives_save_and_load(tmp_path):
    base = DummyLM([{"reasoning": "r", "facts": "f"}, {"answer": "5"}], model="base")
    program = FactQA()
    program.answer.lm = base.copy(model="adapter-1")
    path = program.save(tmp_path / "p.json")

    dspy.configure(lm=base)
    restored = FactQA().load(path)
    assert restored.answer.lm.model == "adapter-1" and restored.extract.predict.lm is None
    with dspy.capture_traces() as traces:
        restored(context="c", question="q")
    assert [(t.predictor_name, t.model) for t in traces] == [
        ("extract.predict", "base"),
        ("answer", "adapter-1"),
    ]


def test_lm_copy_binding_is_restored_against_the_configured_server(tmp_path):
    program = FactQA()
    program.set_lm(LM("base", api_base="http://old-host:1/v1").copy(model="tuned-v2", temperature=0.7))
    path = program.save(tmp_path / "p.json")
    assert "api_key" not in path.read_text()

    dspy.configure(lm=LM("base", api_base="http://new-host:2/v1", api_key="secret"))
    restored = FactQA().load(path)
    for predictor in restored.predictors():
        assert predictor.lm.model == "tuned-v2"
        assert predictor.lm.api_base == "http://new-host:2/v1"  # the configured server, not the saved one
        assert predictor.lm.temperature == 0.7


def test_null_lm_in_file_unbinds_like_dspy(tmp_path):
    path = FactQA().save(tmp_path / "p.json")
    program = FactQA()
    program.set_lm(DummyLM([]))
    program.load(path)
    assert all(p.lm is None for p in program.predictors())


# ---- bad files ------------------------------------------------------------------------------------------


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def fixture_state() -> dict:
    return json.loads(DSPY_FIXTURE.read_text())


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ProgramStateError, match="not found"):
        FactQA().load(tmp_path / "nope.json")
    with pytest.raises(ProgramStateError, match="is not valid JSON"):
        FactQA().load(write(tmp_path, '{"extract.predict": {'))
    with pytest.raises(ProgramStateError, match="must hold a JSON object"):
        FactQA().load(write(tmp_path, "[1, 2]"))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.pop("answer"), r"in the program but not in the file: \['answer'\]"),
        (lambda s: s["answer"]["signature"]["fields"].pop(), "'answer'.*saved signature has 2 fields but"),
        (lambda s: s["answer"].update(demos={"a": 1}), "'answer'.*'demos' must be a list"),
        (lambda s: s["answer"]["demos"].append([1]), r"'answer'.*'demos' must be a list of objects"),
        (lambda s: s["answer"].update(lm={"temperature": 1}), "'answer'.*'lm' must be null or an object"),
        (lambda s: s["answer"].pop("signature"), "'answer'.*no 'signature' entry"),
        (
            lambda s: s["answer"]["signature"].update(instructions=3),
            "'answer'.*instructions' must be a string",
        ),
        (lambda s: s.update(answer="oops"), "'answer'.*must be a JSON object"),
    ],
)
def test_mismatched_state_is_rejected_and_leaves_the_program_untouched(tmp_path, mutate, message):
    state = fixture_state()
    mutate(state)
    program = tuned_program()
    before = program.dump_state()
    with pytest.raises(ProgramStateError, match=message):
        program.load(write(tmp_path, state))
    assert program.dump_state() == before


def test_unknown_predictors_in_a_file_are_ignored_with_a_warning(tmp_path, caplog):
    state = fixture_state()
    state["extra"] = {}
    program = FactQA().load(write(tmp_path, state))
    assert program.answer.signature.instructions == "Answer with a single integer taken from the facts."
    assert "['extra']" in caplog.text and "ignored" in caplog.text


def test_saved_endpoints_and_custom_lm_classes_need_a_trusted_file(tmp_path, caplog):
    state = fixture_state()
    state["answer"]["lm"]["api_base"] = "http://elsewhere:1/v1"
    program = FactQA().load(write(tmp_path, state))
    assert (
        "api_base" not in program.answer.lm.kwargs and program.answer.lm.api_base != "http://elsewhere:1/v1"
    )
    assert "Ignoring unsafe LM config key(s)" in caplog.text
    trusted = FactQA().load(write(tmp_path, state), allow_unsafe_lm_state=True)
    assert trusted.answer.lm.api_base == "http://elsewhere:1/v1"

    state = fixture_state()
    state["answer"]["lm"]["_dspy_lm_class"] = "dspylite.utils.dummy_lm.DummyLM"
    with pytest.raises(ValueError, match="Refusing to import custom serialized LM class"):
        FactQA().load(write(tmp_path, state))


def test_save_is_atomic_when_the_write_fails(tmp_path, monkeypatch):
    path = tuned_program().save(tmp_path / "p.json")
    original = path.read_text()

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        FactQA().save(path)
    assert path.read_text() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]  # no temp file left behind


def test_state_that_is_not_json_fails_before_touching_the_file(tmp_path):
    path = tuned_program().save(tmp_path / "p.json")
    original = path.read_text()
    program = tuned_program()
    program.answer.demos = [Example(facts="f", question="q", answer=1, weight=float("nan"))]
    with pytest.raises(ProgramStateError, match="state is not JSON"):
        program.save(path)
    assert path.read_text() == original
    # Values JSON has no type for are written as text, not dropped.
    program.answer.demos = [Example(facts="f", question="q", answer=1, when=object)]
    data = json.loads(program.save(path).read_text())
    assert data["answer"]["demos"][0]["when"] == "<class 'object'>"
