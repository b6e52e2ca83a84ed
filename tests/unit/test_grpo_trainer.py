"""The GRPO loop end to end without vLLM: a scripted sampling LM, a fake server handle and a real
(random, tiny) Llama trained with PEFT. Checks the plumbing: adapter versions and their loading and
unloading, metrics rows, failure accounting, checkpoints and resume after a kill."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import pytest

from dspylite.adapters import ChatAdapter
from dspylite.completion import Completion
from dspylite.example import Example, Prediction
from dspylite.modules import Module, Predict
from dspylite.settings import context

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

VOCAB = 64


class SamplingLM:
    """Answers like a noisy policy: at temperature > 0 right, wrong or unparseable at random (seeded
    by the rollout id); at temperature 0 right for half the questions. Returns token ids like vLLM."""

    def __init__(self, model: str = "base", calls: list | None = None):
        self.model = model
        self.calls = calls if calls is not None else []

    def generate(self, messages, *, n=1, rollout_id=None, **kwargs):
        user = messages[-1]["content"]
        number = int(re.search(r"q(\d+)", user).group(1))
        temperature = kwargs.get("temperature", 0.0)
        self.calls.append(
            {
                "model": self.model,
                "rollout_id": rollout_id,
                "temperature": temperature,
                "cache": kwargs.get("cache"),
            }
        )
        field = "answer" if "[[ ## fact ## ]]\n" in user else "fact"
        if temperature > 0:
            seed = hashlib.sha256(f"{rollout_id}:{number}:{field}:{len(self.calls)}".encode()).hexdigest()
            draw = random.Random(seed).random()
        else:
            draw = 0.3 if number % 2 == 0 else 0.7
        if draw < 0.15:
            text = "I do not know"  # no markers: a parse failure
        else:
            value = f"a{number}" if draw < 0.6 else "wrong"
            text = f"[[ ## {field} ## ]]\n{value}\n\n[[ ## completed ## ]]"
        prompt_ids = [1 + (b % (VOCAB - 2)) for b in hashlib.sha256(user.encode()).digest()[:10]]
        completion_ids = [1 + (ord(c) % (VOCAB - 2)) for c in text[:12]] + [2]
        return [
            Completion(
                text=text,
                model=self.model,
                finish_reason="stop",
                token_ids=completion_ids,
                prompt_token_ids=prompt_ids,
            )
            for _ in range(n)
        ]

    def copy(self, **overrides):
        return SamplingLM(overrides.get("model", self.model), self.calls)

    def dump_state(self):
        return {"model": self.model}


class FakeServer:
    """The serving handle surface GRPO uses; validates adapter directories like the real one."""

    def __init__(self, model_dir: Path, lm: SamplingLM):
        self.model_name = "base"
        self.base_model = str(model_dir)
        self.loaded_adapters: dict[str, str] = {}
        self.events: list[tuple[str, str]] = []
        self._lm = lm

    def load_adapter(self, name, path):
        from serving.adapter_files import check_base_model, read_adapter

        info = read_adapter(path, name=name)
        check_base_model(info, self.base_model, name=name)
        assert name not in self.loaded_adapters, f"{name} reloaded in place"
        assert name not in [n for kind, n in self.events if kind == "load"], f"{name} loaded twice"
        self.loaded_adapters[name] = info.path
        self.events.append(("load", name))
        return info

    def unload_adapter(self, name):
        del self.loaded_adapters[name]
        self.events.append(("unload", name))

    def adapters(self):
        return list(self.loaded_adapters)

    def lm(self, model=None, **kwargs):
        return self._lm.copy(model=model or self.model_name)


class TwoStep(Module):
    def __init__(self):
        super().__init__()
        self.extract = Predict("question -> fact")
        self.answer = Predict("fact, question -> answer")

    def forward(self, question):
        fact = self.extract(question=question).fact
        return Prediction(answer=self.answer(fact=fact, question=question).answer)


def metric(example, prediction, trace=None):
    return float(prediction.answer == example.answer)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        head_dim=16,
        max_position_embeddings=128,
        pad_token_id=0,
        eos_token_id=2,
        bos_token_id=1,
    )
    directory = tmp_path_factory.mktemp("tiny")
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def _data(n: int, offset: int = 0) -> list[Example]:
    return [
        Example(question=f"q{i}", answer=f"a{i}").with_inputs("question") for i in range(offset, offset + n)
    ]


def _config(**overrides):
    from finetune.config import LoraSettings
    from rl.config import GRPOConfig

    fields = dict(
        num_steps=3,
        examples_per_step=3,
        num_rollouts_per_example=4,
        temperature=1.0,
        learning_rate=5e-3,
        val_every=2,
        rollout_threads=4,
        val_threads=4,
        lora=LoraSettings(r=4, alpha=8),
        threads=1,
        init_adapter="base",
    )
    fields.update(overrides)
    return GRPOConfig(**fields)


def _trainer(cfg, server, lm, run_dir, reward=None, **kwargs):
    """A GRPOTrainer on the fake server: the backend's base model is what the server runs."""
    from rl.trainer import GRPOTrainer
    from serving.backend import Backend

    backend = Backend(server, run_dir=run_dir, base_lm=lm)
    return GRPOTrainer(cfg, reward or metric, backend, **kwargs)


def _run(cfg, server, lm, run_dir, on_step_end=None):
    trainer = _trainer(cfg, server, lm, run_dir, on_step_end=on_step_end)
    return trainer, trainer.fit(TwoStep(), _data(6), _data(6, offset=100))


def test_grpo_loop_versions_metrics_and_report(model_dir, tmp_path):
    lm = SamplingLM()
    server = FakeServer(model_dir, lm)
    cfg = _config()
    trainer, result = _run(cfg, server, lm, tmp_path / "run")

    loads = [name for kind, name in server.events if kind == "load"]
    session = trainer.state["session"]
    assert loads == [f"grpo-{session}-{s}" for s in (1, 2, 3)]  # a new name per step; base start needs none
    for name in loads:
        assert (tmp_path / "run" / "adapters" / name / "adapter_model.safetensors").is_file()
    # stale versions are unloaded: only the best (and nothing else of this run) stays served
    assert set(server.loaded_adapters) <= {result.best_version}
    assert ("unload", loads[0]) in server.events

    # rollouts ran at the rollout temperature with the cache off, with distinct rollout ids per example
    sampled = [c for c in lm.calls if c["temperature"] == 1.0]
    assert sampled and all(c["cache"] is None for c in sampled)  # cache is an LM setting, not a kwarg
    step2_models = {c["model"] for c in sampled[len(sampled) // 3 :]}
    assert loads[0] in step2_models  # step 2 sampled from version 1

    rows = trainer.run.metrics()
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    for row in rows[1:]:
        for key in (
            "reward_mean",
            "reward_std",
            "zero_variance_fraction",
            "parse_failure_rate",
            "loss",
            "kl",
            "rollout_s",
            "train_s",
            "sync_s",
            "step_s",
        ):
            assert key in row, key
        assert row["rollouts"] == 12
        assert 0.0 <= row["parse_failure_rate"] <= 1.0
    assert sum(r["parse_failures"] for r in rows[1:]) > 0  # the scripted LM breaks the format sometimes
    assert "val_score" in rows[0] and "val_score" in rows[2] and "val_score" in rows[3]
    assert "val_score" not in rows[1]
    assert (trainer.run.path / "report.md").read_text().count("| 3 |") >= 1
    assert (trainer.run.path / "report.png").is_file()
    assert any((trainer.run.path / "tensorboard").iterdir())
    # the returned program is bound to the best version; the input program stays unbound
    assert {p.lm.model for _, p in result.program.named_predictors()} == {result.best_version}
    saved = json.loads((trainer.run.path / "program.json").read_text())
    assert result.best_version in json.dumps(saved)


def test_weights_change_between_versions(model_dir, tmp_path):
    from safetensors.torch import load_file

    lm = SamplingLM()
    server = FakeServer(model_dir, lm)
    trainer, _ = _run(_config(num_steps=2, val_every=0), server, lm, tmp_path / "run")
    names = [n for kind, n in server.events if kind == "load"]
    first = load_file(str(tmp_path / "run" / "adapters" / names[0] / "adapter_model.safetensors"))
    second = load_file(str(tmp_path / "run" / "adapters" / names[1] / "adapter_model.safetensors"))
    assert first.keys() == second.keys()
    assert any(not torch.equal(first[k], second[k]) for k in first)


def test_resume_after_kill_does_not_redo_steps(model_dir, tmp_path):
    lm = SamplingLM()
    server = FakeServer(model_dir, lm)
    run_dir = tmp_path / "run"

    class Killed(Exception):
        pass

    def kill_after_first(step, row):
        if step == 1:
            raise Killed

    cfg = _config(num_steps=2, val_every=0)
    # The call count below is exact only without ChatAdapter's JSON retries of unparseable answers.
    no_retry = context(adapter=ChatAdapter(use_json_adapter_fallback=False))
    with no_retry, pytest.raises(Killed):
        _run(cfg, server, lm, run_dir, on_step_end=kill_after_first)
    calls_before = len(lm.calls)
    checkpoint = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    assert checkpoint["step"] == 1
    first_version = json.loads((run_dir / "checkpoints" / checkpoint["dir"] / "state.json").read_text())[
        "version"
    ]

    with context(adapter=ChatAdapter(use_json_adapter_fallback=False)):
        trainer, result = _run(_config(num_steps=2, val_every=0), server, lm, run_dir)
    rows = trainer.run.metrics()
    assert [r["step"] for r in rows] == [0, 1, 2]  # step 0 and 1 not redone, step 2 done once
    # only one step's rollouts (3 examples x 4 rollouts x 2 calls) and the final validation ran again
    assert len(lm.calls) - calls_before <= 3 * 4 * 2 + 6 * 2
    loads = [n for kind, n in server.events if kind == "load"]
    assert loads[0] == first_version and len(loads) == 2 and loads[1] != first_version
    assert result.final.step == 2


def test_optimizer_state_round_trips_through_safetensors(model_dir, tmp_path):
    from rl.groups import Sample
    from rl.policy import Policy

    cfg = _config()
    policy = Policy.load(str(model_dir), cfg)
    samples = [
        Sample("p", "e", 0, r, float(r), adv, [3, 4, 5], [6, 7, 2]) for r, adv in enumerate((1.0, -1.0))
    ]
    stats = policy.update(samples, temperature=1.0)
    assert stats["train_tokens"] == 6 and stats["kl"] >= 0.0
    policy.save_training_state(tmp_path)
    other = Policy.load(str(model_dir), cfg)
    other.load_training_state(tmp_path)
    a = policy.optimizer.state_dict()["state"]
    b = other.optimizer.state_dict()["state"]
    assert a.keys() == b.keys()
    for index in a:
        assert torch.equal(a[index]["exp_avg"], b[index]["exp_avg"])
        assert torch.equal(a[index]["exp_avg_sq"], b[index]["exp_avg_sq"])


def test_grpo_front_end_takes_a_backend_and_one_typed_config(model_dir, tmp_path):
    import inspect

    import dspylite as dspy
    from dspylite.errors import ConfigError, OptimizerError
    from dspylite.optimizers.weights import WeightOptimizer
    from finetune.config import LoraSettings
    from rl.config import GRPOConfig
    from serving.backend import Backend

    assert len(inspect.signature(dspy.GRPO).parameters) <= 10
    lm = SamplingLM()
    backend = Backend(FakeServer(model_dir, lm), run_dir=tmp_path / "run", base_lm=lm)
    config = GRPOConfig(num_steps=3, beta=0.0, lora=LoraSettings(r=4, alpha=8), micro_batch_size=8)
    grpo = dspy.GRPO(metric, backend, config)
    assert isinstance(grpo, WeightOptimizer) and grpo.backend is backend
    cfg = grpo.config
    assert (cfg.num_steps, cfg.beta, cfg.lora.r, cfg.micro_batch_size) == (3, 0.0, 4, 8)
    assert cfg.num_rollouts_per_example == 8  # GRPOConfig's default
    # train_kwargs (DSPy's name) override the config field by field; a value equal to the default still wins.
    tuned = dspy.GRPO(
        metric, backend, GRPOConfig(num_steps=7), train_kwargs={"num_steps": 60, "lora": {"r": 8}}
    )
    assert (tuned.config.num_steps, tuned.config.lora.r, tuned.config.lora.alpha) == (60, 8, 32)
    assert dspy.GRPO(metric, backend, GRPOConfig(num_steps=7)).config.num_steps == 7
    with pytest.raises(ConfigError, match="num_rollout"):
        dspy.GRPO(metric, backend, train_kwargs={"num_rollout": 3})
    with pytest.raises(ConfigError, match="num_rollouts_per_example"):
        dspy.GRPO(metric, backend, train_kwargs={"num_rollouts_per_example": 1})
    # What the job or backend decides is no setting: a name for what to use instead, never ignored.
    with pytest.raises(ConfigError, match=r"model_path is no longer a setting.*Backend\(model_dir"):
        dspy.GRPO(metric, backend, train_kwargs={"model_path": "/elsewhere"})
    with pytest.raises(OptimizerError, match="GRPOConfig"):
        dspy.GRPO(metric, backend, {"num_steps": 3})


def test_grpo_compile_trains_through_the_backend_it_finds_on_the_lm(model_dir, tmp_path):
    import dspylite as dspy
    from serving.backend import Backend

    lm = SamplingLM()
    server = FakeServer(model_dir, lm)
    backend = Backend(server, run_dir=tmp_path / "run", base_lm=lm, serving_dtype="bf16")
    grpo = dspy.GRPO(metric, config=_config(num_steps=1, val_every=0), display_progress=False)
    with dspy.context(lm=lm):  # base_lm carries its backend, like backend.lm()
        tuned = grpo.compile(TwoStep(), trainset=_data(6), valset=_data(2, offset=100))
    assert grpo.backend is backend
    [entry] = backend.registry.list()  # step 1's version, registered in the backend's registry
    assert ("load", entry.name) in server.events and entry.base_model == str(model_dir.resolve())
    metadata = json.loads((Path(entry.path) / "dspylite_adapter.json").read_text())
    assert metadata["precision"]["serving_dtype"] == "bfloat16"  # Backend.serving_dtype, normalized once
    best = grpo.result.best_version
    assert {p.lm.model for p in tuned.predictors()} == {best}
    assert grpo.published == ({best: grpo.result.best_adapter_dir} if best == entry.name else {})


def test_grpo_holds_out_a_valset_when_none_is_given():
    from dspylite.optimizers.grpo import _hold_out

    train, val = _hold_out(_data(10), 0.2, seed=0)
    assert len(train) == 8 and len(val) == 2
    assert {e.question for e in train}.isdisjoint({e.question for e in val})
    assert _hold_out(_data(10), 0.2, seed=0)[1] == val  # seeded


def test_grpo_yaml_config_loads_with_overrides():
    from dspylite.config_io import load_config
    from dspylite.errors import ConfigError
    from dspylite.jobs.grpo_job import GRPOJobConfig

    def load_job_config(path, overrides):
        return load_config(GRPOJobConfig, path, overrides)

    root = Path(__file__).resolve().parents[2]
    cfg = load_job_config(
        root / "configs" / "grpo.yaml", ["grpo.num_steps=2", "task.name=fact_topic", "reward=metric"]
    )
    assert cfg.grpo.num_steps == 2 and cfg.task.name == "fact_topic"
    assert (root / "configs" / "grpo.yaml").read_text().startswith("# dspylite grpo configs/grpo.yaml")
    with pytest.raises(ConfigError, match="grpo.temprature"):
        load_job_config(root / "configs" / "grpo.yaml", ["grpo.temprature=0.5"])


def test_rollouts_reward_parse_failures_and_exclude_server_errors():
    from dspylite.errors import LMServerError
    from rl.rollouts import collect_rollouts
    from rl.trainer import rollout_program

    class FlakyLM(SamplingLM):
        def generate(self, messages, *, n=1, rollout_id=None, **kwargs):
            if rollout_id == 2:
                raise LMServerError("HTTP 503 from the test", status_code=503)
            if rollout_id == 1:
                return [
                    Completion(
                        text="no markers here", model=self.model, token_ids=[5, 2], prompt_token_ids=[3, 4]
                    )
                ]
            # rollout 0 answers in format (right or wrong): the sampled temperature is irrelevant here
            return super().generate(messages, n=n, rollout_id=rollout_id, temperature=0.0)

        def copy(self, **overrides):
            return FlakyLM(overrides.get("model", self.model), self.calls)

    program = rollout_program(TwoStep(), "v1", FlakyLM())
    batch = collect_rollouts(
        program, _data(2), metric, num_rollouts=3, temperature=1.0, format_failure_reward=-1.0, num_threads=3
    )
    stats = batch.stats()
    assert stats["rollouts"] == 6 and stats["excluded_rollouts"] == 2 and stats["errors_lm"] == 2
    assert stats["parse_failures"] == 2 and stats["parse_failure_rate"] == pytest.approx(2 / 6)
    failed = [r for r in batch.rollouts if r.error_kind == "parse"]
    assert all(r.reward == -1.0 for r in failed)
    assert all(
        r.traces and r.traces[-1].error and r.traces[-1].completion == "no markers here" for r in failed
    )
    assert {r.rollout_id for r in batch.rollouts} == {0, 1}
    assert all(t.model == "v1" for r in batch.rollouts for t in r.traces)
    with pytest.raises(ValueError, match="temperature"):
        collect_rollouts(program, _data(1), metric, num_rollouts=2, temperature=0.0)


def test_from_an_init_adapter_the_kl_reference_is_that_adapter_not_the_base(model_dir, tmp_path):
    from rl.groups import Sample
    from rl.policy import Policy

    cfg = _config()
    cfg.learning_rate = 5e-2
    samples = [
        Sample("p", "e", 0, r, float(r), adv, [3, 4, 5], [6, 7, 2]) for r, adv in enumerate((1.0, -1.0))
    ]
    # A start adapter that differs from the base model: one big update from a fresh LoRA.
    start = Policy.load(str(model_dir), cfg)
    for _ in range(3):
        start.update(samples, temperature=1.0)
    start_dir = start.save_adapter(tmp_path / "start")
    assert start.update(samples, temperature=1.0)["kl"] > 1e-4  # it is far from the base

    policy = Policy.load(str(model_dir), cfg, adapter_dir=str(start_dir), serving_dtype="bfloat16")
    assert policy.reference_adapter == "reference"
    trainable = {n for n, p in policy.model.named_parameters() if p.requires_grad}
    assert trainable and all(".default." in n for n in trainable)
    first = policy.update(samples, temperature=1.0)
    assert first["kl"] == pytest.approx(0.0, abs=1e-6)  # policy == its start before any update
    second = policy.update(samples, temperature=1.0)
    assert second["kl"] > 0.0  # the trained copy moved, the reference did not
    assert {n for n, p in policy.model.named_parameters() if p.requires_grad} == trainable

    saved = policy.save_adapter(tmp_path / "next")
    assert not (saved / "reference").exists()  # only the trained adapter is written
    assert (saved / "adapter_model.safetensors").is_file()
    metadata = json.loads((saved / "dspylite_adapter.json").read_text())
    assert metadata["trainer"] == "grpo" and metadata["base_model"] == policy.model_path
    assert metadata["precision"]["train_dtype"] == "float32" and metadata["precision"]["match"] is False


def test_a_testset_scores_start_and_best_without_reloading_any_version(model_dir, tmp_path):

    lm = SamplingLM()
    server = FakeServer(model_dir, lm)  # refuses a second load of any name
    cfg = _config(num_steps=2, val_every=1)
    trainer = _trainer(cfg, server, lm, tmp_path / "run")
    testset = _data(8, offset=200)
    result = trainer.fit(TwoStep(), _data(6), _data(6, offset=100), testset=testset)

    assert result.test_start is not None and result.test_best is not None
    assert len(result.test_start.scores) == len(result.test_best.scores) == 8
    assert (
        result.test_start.version == result.start.version and result.test_best.version == result.best_version
    )
    # Greedy answers are right exactly for even question numbers (SamplingLM): the base start scores 4/8.
    assert result.test_start.score == pytest.approx(0.5)
    diff, lo, hi = result.test_improvement()
    assert diff == pytest.approx(result.test_best.score - result.test_start.score) and lo <= diff <= hi
    saved = json.loads((trainer.run.path / "result.json").read_text())
    assert saved["test_start"]["score"] == pytest.approx(result.test_start.score)
    assert len(saved["test_improvement_best_vs_start"]) == 3
    assert "held-out test set" in (trainer.run.path / "report.md").read_text()


def test_without_a_testset_there_is_no_test_score(model_dir, tmp_path):
    lm = SamplingLM()
    trainer, result = _run(_config(num_steps=1, val_every=0), FakeServer(model_dir, lm), lm, tmp_path / "run")
    assert result.test_improvement() is None
    assert "test_start" not in json.loads((trainer.run.path / "result.json").read_text())


def test_a_run_from_an_init_adapter_checkpoints_only_the_trained_adapter(model_dir, tmp_path):
    from rl.policy import Policy

    start_dir = Policy.load(str(model_dir), _config()).save_adapter(tmp_path / "start")
    lm = SamplingLM()
    cfg = _config(num_steps=1, val_every=0, init_adapter=str(start_dir))
    trainer, result = _run(cfg, FakeServer(model_dir, lm), lm, tmp_path / "run")
    assert trainer.policy.reference_adapter == "reference"
    checkpoints = list((tmp_path / "run" / "checkpoints").glob("step-*"))
    assert checkpoints
    for checkpoint in checkpoints:
        saved = [p.name for p in checkpoint.rglob("*") if p.is_dir()]
        assert "reference" not in saved
    versions = [p for p in (tmp_path / "run" / "adapters").iterdir() if p.is_dir()]
    assert versions and all(not (v / "reference").exists() for v in versions)


def test_dynamic_sampling_rolls_out_more_examples_until_enough_carry_signal(model_dir, tmp_path):

    def no_signal(example, prediction, trace=None):  # every rollout scores the same: no group has variance
        return 0.0

    lm = SamplingLM()
    cfg = _config(num_steps=2, val_every=0, dynamic_sampling_rounds=2)
    trainer = _trainer(cfg, FakeServer(model_dir, lm), lm, tmp_path / "flat", reward=no_signal)
    trainer.fit(TwoStep(), _data(6), _data(2, offset=100))
    rows = [r for r in trainer.run.metrics() if r.get("step", 0) > 0 and "rollouts" in r]
    assert [r["sampling_rounds"] for r in rows] == [3, 3]  # one round plus the two allowed extra
    assert [r["rollouts"] for r in rows] == [36, 36]  # 3 rounds x 3 examples x 4 rollouts
    assert all(r["examples_with_signal"] == 0 and not r["updated"] for r in rows)
    # each round's examples form their own groups (2 predictors x 9 examples), never merged by position
    assert all(r["groups"] > 12 for r in rows)
    assert trainer.state["epoch"] * 6 + trainer.state["cursor"] == 18  # 2 steps x 9 examples drawn

    lm = SamplingLM()
    cfg = _config(num_steps=1, val_every=0, dynamic_sampling_rounds=2)
    trainer = _trainer(cfg, FakeServer(model_dir, lm), lm, tmp_path / "noisy")
    trainer.fit(TwoStep(), _data(6), _data(2, offset=100))
    (row,) = [r for r in trainer.run.metrics() if r.get("step") == 1 and "rollouts" in r]
    # extra rounds only while fewer than examples_per_step examples have reward variance (the count
    # accumulates over rounds): stopping before the last allowed round means enough had signal, and
    # too few with signal means every allowed round ran
    if row["sampling_rounds"] < 3:
        assert row["examples_with_signal"] >= 3
    if row["examples_with_signal"] < 3:
        assert row["sampling_rounds"] == 3
    assert row["rollouts"] == 12 * row["sampling_rounds"]


def test_a_version_published_after_the_last_checkpoint_is_dropped_on_resume(model_dir, tmp_path, monkeypatch):
    """Killed between registering step 2's version and checkpointing step 2: the resume redoes step 2
    under a new name, and the killed run's version leaves the registry and the disk."""
    from rl.trainer import GRPOTrainer
    from serving.registry import AdapterRegistry

    lm = SamplingLM()
    server = FakeServer(model_dir, lm)
    run_dir = tmp_path / "run"

    class Killed(Exception):
        pass

    real_checkpoint = GRPOTrainer._checkpoint

    def checkpoint_then_die_at_step_2(self, step, row):
        if step == 2:
            raise Killed
        real_checkpoint(self, step, row)

    monkeypatch.setattr(GRPOTrainer, "_checkpoint", checkpoint_then_die_at_step_2)
    with pytest.raises(Killed):
        _run(_config(num_steps=2, val_every=0), server, lm, run_dir)
    registry = AdapterRegistry(run_dir / "adapters")
    killed = [e.name for e in registry.list()]
    assert [e.metadata["step"] for e in registry.list()] == [1, 2]
    orphan = killed[1]
    assert (run_dir / "adapters" / orphan).is_dir()

    monkeypatch.setattr(GRPOTrainer, "_checkpoint", real_checkpoint)
    server = FakeServer(model_dir, lm)  # the owner's kill took its server down too
    trainer, result = _run(_config(num_steps=2, val_every=0), server, lm, run_dir)
    names = [e.name for e in registry.list()]
    assert orphan not in names and not (run_dir / "adapters" / orphan).exists()
    assert names[0] == killed[0]  # step 1's version, in the checkpoint, stays
    assert len(names) == 2 and names[1].endswith("-2") and names[1] != orphan
    assert result.final.step == 2


def test_policy_device_and_precision_resolve_on_a_cpu_machine(model_dir, tmp_path, monkeypatch):
    import serving.dtype
    from dspylite.errors import TrainingError
    from rl.policy import Policy, resolve_device

    assert not torch.cuda.is_available()  # this test states what a CPU-only machine gets
    monkeypatch.setattr(serving.dtype, "cpu_has_native_bf16", lambda *a: False)  # an AVX2-only CPU
    policy = Policy.load(str(model_dir), _config())
    assert next(policy.model.parameters()).device.type == "cpu" and policy.train_dtype == "float32"
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(TrainingError, match=r"grpo.device='cuda:1' but no CUDA GPU is visible"):
        Policy.load(str(model_dir), _config(device="cuda:1"))
    with pytest.raises(TrainingError, match=r"grpo.precision='bf16' needs a GPU or a CPU with native bf16"):
        Policy.load(str(model_dir), _config(precision="bf16"))
    with pytest.raises(ValueError, match=r"device must be auto, cpu, cuda or cuda:N, got 'gpu0'"):
        _config(device="gpu0")
    with pytest.raises(ValueError, match=r"precision must be auto, fp32 or bf16, got 'fp16'"):
        _config(precision="fp16")
