"""BootstrapFinetune's orchestration with a scripted LM, a fake server and a fake trainer (no torch, no vLLM).

Real training and a real vLLM are covered by tests/integration/test_finetune_vllm.py.
"""

from __future__ import annotations

import inspect
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from serving_helpers import make_adapter

import dspylite as dspy
from dspylite.completion import Completion
from dspylite.datasets import fact_qa_metric, load_fact_qa
from dspylite.datasets.programs import FactQA
from dspylite.errors import MetricError, OptimizerError, TrainingError
from dspylite.optimizers import BootstrapFinetune
from dspylite.optimizers.bootstrap_finetune import BootstrapFinetuneConfig
from dspylite.utils.dummy_lm import DummyLM
from finetune.sft import AdapterResult
from serving.backend import Backend
from serving.registry import AdapterRegistry

BASE = "/models/base"
SFT_NAME = re.compile(r"^sft-[0-9a-f]{6}-\d+$")


class FakeServer:
    model_name = "base"
    base_model = BASE
    max_lora_rank = 16

    def __init__(self) -> None:
        self.loaded: dict[str, str] = {}

    def load_adapter(self, name: str, path: str) -> None:
        assert name not in self.loaded, "an adapter name was reloaded in place"
        self.loaded[name] = path

    def adapters(self) -> list[str]:
        return list(self.loaded)


class FakeTrainer:
    """Records what it was asked to train on and writes a valid-looking adapter directory."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, data, cfg, run, *, adapter_name, model_path, extra_metadata, serving_dtype):
        self.calls.append(
            {
                "data": data,
                "cfg": cfg,
                "name": adapter_name,
                "model_path": model_path,
                "serving_dtype": serving_dtype,
            }
        )
        path = make_adapter(run.adapters_dir / adapter_name, rank=cfg.lora.r, base_model=model_path)
        return AdapterResult(
            name=adapter_name,
            path=str(path),
            base_model=model_path,
            data_hash=data.data_hash,
            metrics={"train_loss": 0.5},
        )


def oracle_lm(examples, model: str = "base", wrong_every: int = 0) -> DummyLM:
    """Answers every Fact QA example right (or every ``wrong_every``-th one wrong)."""
    answers = {}
    for i, ex in enumerate(examples):
        answers[
            ex.question
            + "\n\nRespond with the corresponding output fields, starting with the field `[[ ## fact"
        ] = {"fact": ex.fact}
        wrong = wrong_every and i % wrong_every == 0
        answers[ex.fact + "\n\n[[ ## question ## ]]\n" + ex.question] = {
            "answer": "nope" if wrong else ex.answer
        }
    return DummyLM(answers, model=model)


@pytest.fixture
def examples():
    return load_fact_qa(n_train=12, n_dev=0, n_test=0)["train"]


def make_optimizer(
    tmp_path: Path, *, registry=None, train_kwargs=None, metric=fact_qa_metric, multitask=True, **settings
) -> tuple[BootstrapFinetune, FakeServer, FakeTrainer]:
    """A BootstrapFinetune on a fake server and trainer; ``settings`` are BootstrapFinetuneConfig fields."""
    server, trainer = FakeServer(), FakeTrainer()
    backend = Backend(server, run_dir=tmp_path / "run", registry=registry, model_dir=BASE)
    config = BootstrapFinetuneConfig(train_fn=trainer, display_progress=False, **settings)
    optimizer = BootstrapFinetune(
        metric,
        backend,
        config,
        multitask=multitask,
        train_kwargs={"val_fraction": 0.0, **(train_kwargs or {})},
        num_threads=4,
    )
    return optimizer, server, trainer


@pytest.fixture(autouse=True)
def no_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    # The fake base model has no tokenizer on disk; length checks are tested in test_sft_data.py.
    import finetune.data as data_module

    original = data_module.build_sft_data

    def without_tokenizer(runs, **kwargs):
        kwargs["tokenizer"] = None
        return original(runs, **kwargs)

    monkeypatch.setattr(data_module, "build_sft_data", without_tokenizer)


def test_compile_returns_a_bound_copy_and_leaves_the_original_alone(tmp_path: Path, examples) -> None:
    lm = oracle_lm(examples, wrong_every=3)
    program = FactQA()
    program.set_lm(lm)
    optimizer, server, trainer = make_optimizer(tmp_path)
    tuned = optimizer.compile(program, trainset=examples)

    assert tuned is not program
    assert [p.lm for p in program.predictors()] == [lm, lm]  # untouched
    [name] = {p.lm.model for p in tuned.predictors()}
    assert SFT_NAME.match(name) and name.endswith("-1")
    assert server.loaded == {name: str(tmp_path / "run" / "adapters" / name)}
    registry = AdapterRegistry(tmp_path / "run" / "adapters")
    assert registry.get(name).base_model == BASE
    assert registry.get(name).metrics == {"train_loss": 0.5}

    [call] = trainer.calls
    assert call["model_path"] == BASE
    rows = call["data"].train
    assert len(rows) == 2 * 8  # 8 of 12 examples pass (every 3rd answer is wrong), 2 predictor calls each
    assert {r.predictor for r in rows} == {"extract", "answer"}
    outcome = optimizer.outcome
    assert outcome.data_card["runs_dropped"]["below_threshold"] == 4
    assert outcome.bindings == {"extract": name, "answer": name}
    saved = json.loads((tmp_path / "run" / "program.json").read_text())
    assert saved["extract"]["lm"]["model"] == name
    assert (tmp_path / "run" / "data" / "data_card.md").exists()

    again = optimizer.compile(program, trainset=examples)
    [second] = {p.lm.model for p in again.predictors()}
    assert SFT_NAME.match(second) and second != name  # a new version, never the first name again


def test_adapter_names_differ_across_fresh_registries(tmp_path: Path, examples) -> None:
    # LM responses are cached by model name: two runs with their own registries must not share one.
    names = []
    for run in ("a", "b"):
        optimizer, server, trainer = make_optimizer(tmp_path / run)
        with dspy.context(lm=oracle_lm(examples)):
            tuned = optimizer.compile(FactQA(), trainset=examples)
        names.append(tuned.answer.lm.model)
    assert all(SFT_NAME.match(n) for n in names) and names[0] != names[1]


def test_one_adapter_per_predictor_when_not_multitask(tmp_path: Path, examples) -> None:
    program = FactQA()
    optimizer, server, trainer = make_optimizer(tmp_path, multitask=False)
    with dspy.context(lm=oracle_lm(examples)):
        tuned = optimizer.compile(program, trainset=examples)
    assert sorted(server.loaded) == sorted({tuned.extract.lm.model, tuned.answer.lm.model})
    assert re.fullmatch(r"sft-extract-[0-9a-f]{6}-1", tuned.extract.lm.model)
    assert re.fullmatch(r"sft-answer-[0-9a-f]{6}-1", tuned.answer.lm.model)
    assert [{r.predictor for r in c["data"].train} for c in trainer.calls] == [{"extract"}, {"answer"}]


def test_samples_run_at_temperature_with_distinct_rollout_ids(tmp_path: Path, examples) -> None:
    seen: list[tuple[int | None, float | None, int | None]] = []
    lock = threading.Lock()
    inner = oracle_lm(examples)

    class Recording:
        model = "base"

        def generate(self, messages, *, n=1, rollout_id=None, **kwargs):
            with lock:
                seen.append((rollout_id, kwargs.get("temperature"), kwargs.get("seed")))
            return [
                Completion(text=c.text, model="base", finish_reason="stop")
                for c in inner.generate(messages, n=n)
            ]

        def copy(self, **overrides):
            return self

        def dump_state(self):
            return {"model": self.model}

    optimizer, _, trainer = make_optimizer(
        tmp_path, samples_per_example=3, sample_temperature=0.9, sample_seed=10
    )
    with dspy.context(lm=Recording()):
        optimizer.compile(FactQA(), trainset=examples)
    assert sorted(set(seen), key=str) == sorted({(None, None, None), (1, 0.9, 11), (2, 0.9, 12)}, key=str)
    assert len(seen) == 3 * 12 * 2
    assert optimizer.outcome.runs == 36
    # identical completions across samples are deduplicated
    assert len(trainer.calls[0]["data"].train) == 24
    assert trainer.calls[0]["data"].card.records_dropped["duplicate"] == 48


def test_an_empty_trainset_is_refused(tmp_path: Path) -> None:
    optimizer, _, _ = make_optimizer(tmp_path)
    with pytest.raises(OptimizerError, match="trainset is empty"):
        optimizer.compile(FactQA(), trainset=[])


def test_a_teacher_that_never_passes_gives_a_clear_error_and_registers_nothing(
    tmp_path: Path, examples
) -> None:
    optimizer, server, trainer = make_optimizer(tmp_path)
    with (
        dspy.context(lm=oracle_lm(examples, wrong_every=1)),
        pytest.raises(TrainingError, match=r"0/12 runs passed \(dropped: below_threshold=12\)"),
    ):
        optimizer.compile(FactQA(), trainset=examples)
    assert trainer.calls == [] and server.loaded == {}


def test_a_metric_that_raises_is_counted_and_reported(tmp_path: Path, examples) -> None:
    def broken(example, prediction, trace=None):
        raise ZeroDivisionError("bad metric")

    optimizer, _, _ = make_optimizer(tmp_path, metric=broken)
    with (
        dspy.context(lm=oracle_lm(examples)),
        pytest.raises(TrainingError, match=r"metric_error=12.*ZeroDivisionError: bad metric"),
    ):
        optimizer.compile(FactQA(), trainset=examples)


def test_a_metric_returning_a_non_number_raises_metric_error(tmp_path: Path, examples) -> None:
    optimizer, _, _ = make_optimizer(tmp_path, metric=lambda e, p, t=None: "yes")
    with dspy.context(lm=oracle_lm(examples)), pytest.raises(MetricError, match="str"):
        optimizer.compile(FactQA(), trainset=examples)


def test_traces_from_a_different_base_model_are_refused(tmp_path: Path, examples) -> None:
    optimizer, server, trainer = make_optimizer(tmp_path)
    with (
        dspy.context(lm=oracle_lm(examples, model="some-other-model")),
        pytest.raises(TrainingError, match="'some-other-model'"),
    ):
        optimizer.compile(FactQA(), trainset=examples)
    assert trainer.calls == []


def test_traces_from_a_registered_adapter_of_the_base_are_accepted(tmp_path: Path, examples) -> None:
    registry = AdapterRegistry(tmp_path / "run" / "adapters")
    registry.register("old-1", make_adapter(tmp_path / "old-1", base_model=BASE))
    optimizer, server, trainer = make_optimizer(tmp_path, registry=registry)
    with dspy.context(lm=oracle_lm(examples, model="old-1")):
        tuned = optimizer.compile(FactQA(), trainset=examples)
    assert SFT_NAME.match(tuned.answer.lm.model)


def test_an_explicit_teacher_lm_may_be_another_model(tmp_path: Path, examples) -> None:
    student_lm = oracle_lm(examples, wrong_every=1)  # the student never passes on its own
    teacher = oracle_lm(examples, model="big-teacher")
    program = FactQA()
    program.set_lm(student_lm)
    optimizer, server, trainer = make_optimizer(tmp_path)
    tuned = optimizer.compile(program, trainset=examples, teacher=teacher)  # DSPy: teacher is compile's
    assert {r.model for r in trainer.calls[0]["data"].train} == {"big-teacher"}
    assert SFT_NAME.match(tuned.answer.lm.model)
    assert program.answer.lm is student_lm


def test_a_rank_the_server_cannot_serve_is_refused_before_any_work(tmp_path: Path, examples) -> None:
    optimizer, server, trainer = make_optimizer(tmp_path, train_kwargs={"lora": {"r": 32}})
    with dspy.context(lm=oracle_lm(examples)), pytest.raises(OptimizerError, match="max_lora_rank=16"):
        optimizer.compile(FactQA(), trainset=examples)
    assert trainer.calls == []


def test_an_empty_shared_registry_is_used_not_replaced(tmp_path: Path, examples) -> None:
    registry = AdapterRegistry(tmp_path / "shared")  # empty, so len() == 0 and bool() is False
    optimizer, server, trainer = make_optimizer(tmp_path, registry=registry)
    with dspy.context(lm=oracle_lm(examples)):
        optimizer.compile(FactQA(), trainset=examples)
    [entry] = registry.list()
    assert SFT_NAME.match(entry.name)
    assert not (tmp_path / "run" / "adapters" / "registry.json").exists()


def test_a_server_that_stops_answering_stops_the_collection_early(tmp_path: Path, examples) -> None:
    from dspylite.errors import LMConnectionError

    calls = []

    class Dead:
        model = "base"

        def generate(self, messages, *, n=1, rollout_id=None, **kwargs):
            calls.append(1)
            raise LMConnectionError("connection refused")

        def copy(self, **overrides):
            return self

        def dump_state(self):
            return {"model": self.model}

    optimizer, server, trainer = make_optimizer(tmp_path, samples_per_example=8, max_lm_errors=5)
    optimizer.num_threads = 1
    with dspy.context(lm=Dead()), pytest.raises(OptimizerError, match=r"more than 5 teacher runs failed"):
        optimizer.compile(FactQA(), trainset=examples)
    assert len(calls) == 6  # stopped at the 6th failure, not after all 96 runs
    assert trainer.calls == []


def test_the_backend_is_required_or_found_on_the_lm_as_dspy_finds_lm_finetune(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dspylite
    from dspylite.optimizers.weights import WeightOptimizer, find_backend

    monkeypatch.chdir(tmp_path)  # a backend without run_dir writes under ./runs
    train = load_fact_qa(n_train=2, n_dev=0, n_test=0)["train"]
    with dspylite.context(lm=None), pytest.raises(OptimizerError, match="Backend"):
        BootstrapFinetune(fact_qa_metric).compile(FactQA(), trainset=train)
    assert not (tmp_path / "runs").exists()  # refused before writing anything
    with pytest.raises(OptimizerError, match="backend= takes"):
        find_backend(FakeServer(), FactQA(), "BootstrapFinetune")  # a bare server is not a backend
    from fake_vllm_server import FakeVLLM

    with FakeVLLM("base-model") as fake:
        # backend.lm() carries its backend: DSPy's BootstrapFinetune(metric) call shape finds it.
        backend = Backend.connect(fake.api_base, run_dir=tmp_path / "run")
        optimizer = BootstrapFinetune(fact_qa_metric)
        assert isinstance(optimizer, WeightOptimizer) and optimizer.backend is None
        with dspylite.context(lm=backend.lm(temperature=0.0)):
            assert find_backend(None, FactQA(), "BootstrapFinetune") is backend
        program = FactQA()
        program.set_lm(backend.lm().copy(model="some-adapter"))  # copies keep it
        assert find_backend(None, program, "BootstrapFinetune") is backend
        # An LM that only talks to the server: connected to it, as DSPy infers the provider.
        program.set_lm(dspylite.LM("base-model", api_base=fake.api_base))
        found = find_backend(None, program, "BootstrapFinetune")
        assert found.server.api_base == fake.api_base and found.run_dir is None
        assert found.with_run_dir("bootstrap_finetune").run_dir.parent == Path("runs")


def test_importing_the_optimizer_does_not_import_training_libraries() -> None:
    import subprocess
    import sys

    code = (
        "import sys, dspylite as dspy; dspy.BootstrapFinetune; "
        "heavy = [m for m in ('torch', 'trl', 'peft', 'transformers', 'datasets') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_rerun_reuses_the_collected_data_and_new_settings_collect_again(
    tmp_path: Path, examples, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = oracle_lm(examples, wrong_every=3)
    program = FactQA()
    program.set_lm(lm)
    calls = []
    original = DummyLM.generate

    def counted(self, *args, **kwargs):  # noqa: ANN001, ANN202
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DummyLM, "generate", counted)
    first, _, trainer = make_optimizer(tmp_path)
    first.compile(program, trainset=examples)
    collected = len(calls)
    assert collected == 2 * len(examples)
    # A killed compile rerun in the same run directory: the data is its checkpoint, no new teacher runs.
    second, _, trainer2 = make_optimizer(tmp_path)
    second.compile(program, trainset=examples)
    assert len(calls) == collected
    assert [r.to_dict() for r in trainer2.calls[0]["data"].train] == [
        r.to_dict() for r in trainer.calls[0]["data"].train
    ]
    # Other data settings (or examples) are another collection.
    third, _, _ = make_optimizer(tmp_path, samples_per_example=2)
    third.compile(program, trainset=examples)
    assert len(calls) > collected


def test_dspy_call_shape_metric_none_keeps_every_run_and_train_kwargs_override(
    tmp_path: Path, examples
) -> None:
    lm = oracle_lm(examples, wrong_every=3)
    program = FactQA()
    program.set_lm(lm)
    server, trainer = FakeServer(), FakeTrainer()
    with dspy.context(num_threads=3):
        optimizer = BootstrapFinetune(
            None,  # DSPy: no metric, every trace is data
            train_kwargs={"learning_rate": 1e-4, "num_train_epochs": 3, "val_fraction": 0.0},
        )
    assert optimizer.num_threads == 3  # DSPy: num_threads=None is the configured thread count
    # DSPy's six keywords, plus the backend and one config: the constructor stays that small.
    assert len(inspect.signature(BootstrapFinetune).parameters) <= 10
    optimizer.config.train_fn, optimizer.config.display_progress = trainer, False
    lm.backend = Backend(server, run_dir=tmp_path / "run", model_dir=BASE)  # as backend.lm() sets it
    optimizer.compile(program, trainset=examples)  # finds the backend on the program's LM
    [call] = trainer.calls
    assert len(call["data"].train) == 2 * len(examples)  # the 4 wrong answers are kept too
    assert (call["cfg"].learning_rate, call["cfg"].num_train_epochs) == (1e-4, 3)


@pytest.mark.parametrize("exclude_demos", [False, True])
def test_exclude_demos_trains_on_the_prompts_without_the_demo_turns(
    tmp_path: Path, examples, exclude_demos: bool
) -> None:
    from dspylite.example import Example

    program = FactQA()
    program.set_lm(oracle_lm(examples))
    demo = Example(
        fact="Lake Zug lies in Switzerland.", question="Which country is Lake Zug in?", answer="Switzerland"
    )
    program.answer.demos = [demo]
    server, trainer = FakeServer(), FakeTrainer()
    backend = Backend(server, run_dir=tmp_path / "run", model_dir=BASE)
    optimizer = BootstrapFinetune(
        fact_qa_metric,
        backend,
        BootstrapFinetuneConfig(train_fn=trainer, display_progress=False),
        train_kwargs={"val_fraction": 0.0},
        exclude_demos=exclude_demos,
        num_threads=4,
    )
    tuned = optimizer.compile(program, trainset=examples)

    rows = trainer.calls[0]["data"].train
    answer_rows = [r for r in rows if r.predictor == "answer"]
    extract_rows = [r for r in rows if r.predictor == "extract"]
    assert len(answer_rows) == len(examples)
    for row in answer_rows:
        shown = " ".join(m["content"] for m in row.prompt)
        assert ("Lake Zug" in shown) is not exclude_demos
        # system + (demo user + demo assistant) + the call itself; the raw completion either way
        assert [m["role"] for m in row.prompt] == (
            ["system", "user"] if exclude_demos else ["system", "user", "assistant", "user"]
        )
        assert row.completion[0]["content"].startswith("[[ ## answer ## ]]")
    assert all(len(r.prompt) == 2 for r in extract_rows)  # no demos: untouched
    assert tuned.answer.demos == ([] if exclude_demos else [demo])
    assert program.answer.demos == [demo]  # the program passed in keeps its demos
