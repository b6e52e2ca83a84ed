"""The whole demo job (dspylite.jobs.demo_job.run_demo, all six stages) against the fake vLLM, with
stub trainers: SFT's ``finetune.sft.train_lora`` and GRPO's ``rl.policy.Policy`` write valid adapter
directories instead of training. The fake answers Fact QA right when asked through an adapter and
only on some examples through the base model, so the weight stages beat the baseline. A rerun with
the same run directory loads every stage from stages.json (no training, no prompt search) and
re-serves the stages' adapters to a fresh server.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fake_vllm_server import FakeVLLM
from serving_helpers import make_adapter

from dspylite.datasets import load_fact_qa
from dspylite.jobs.demo_job import run_demo
from dspylite.jobs.report_job import DEMO_STAGE_TITLES, DEMO_STAGES
from finetune.sft import AdapterResult

SIZES = {"n_train": 8, "n_dev": 6, "n_test": 6}
SERVED_NAME = "tiny"


def fact_qa_reply_fn(base_name: str):  # noqa: ANN201
    """Fact QA through the fake: the fact step is always right; the answer step is right through any
    adapter, and through the base model only on every other example (the teacher must pass some for
    SFT to have rows), plus every third one when the prompt carries demos (so prompts help, but less
    than weights: BetterTogether's selection picks its "p -> w" stage).
    Sampled calls (temperature > 0, GRPO's rollouts) alternate right and wrong per prompt, so every
    GRPO group has reward variance and the policy is updated."""
    splits = load_fact_qa(seed=0, **SIZES)
    examples = [ex for split in splits.values() for ex in split]
    samples: Counter[str] = Counter()
    lock = threading.Lock()

    def reply(body: dict[str, Any]) -> str:
        last = body["messages"][-1]["content"]
        for index, ex in enumerate(examples):
            if "[[ ## context ## ]]" in last and ex.context in last and ex.question in last:
                return f"[[ ## fact ## ]]\n{ex.fact}\n\n[[ ## completed ## ]]"
            if "[[ ## fact ## ]]" in last and ex.fact in last and ex.question in last:
                if (body.get("temperature") or 0) > 0:
                    with lock:
                        samples[last] += 1
                        right = samples[last] % 2 == 1
                else:
                    adapter = body["model"] != base_name
                    with_demos = len(body["messages"]) > 2
                    right = adapter or index % 2 == 0 or (with_demos and index % 3 == 0)
                return f"[[ ## answer ## ]]\n{ex.answer if right else 'unknown'}\n\n[[ ## completed ## ]]"
        return "no markers here"

    return reply


class Recorder:
    """What the stub trainers were asked to do."""

    def __init__(self) -> None:
        self.sft: list[dict[str, Any]] = []
        self.policy_loads: list[dict[str, Any]] = []
        self.updates = 0
        self.update_prompt_turns: list[int] = []  # per GRPO update: the most messages a sample was sent
        self.saved: list[str] = []
        self.lock = threading.Lock()


def install_stub_trainers(monkeypatch: pytest.MonkeyPatch, recorder: Recorder) -> None:
    import finetune.data
    import finetune.sft
    import rl.policy

    def train_lora(
        data,
        cfg,
        run_dir,
        *,
        adapter_name=None,
        model_path=None,
        extra_metadata=None,
        callbacks=None,
        serving_dtype=None,
    ):
        recorder.sft.append(
            {
                "name": adapter_name,
                "rows": len(data.train),
                "model_path": model_path,
                "serving_dtype": serving_dtype,
            }
        )
        path = make_adapter(run_dir.adapters_dir / adapter_name, rank=cfg.lora.r, base_model=model_path)
        return AdapterResult(
            name=adapter_name,
            path=str(path),
            base_model=model_path,
            data_hash=data.data_hash,
            metrics={"train_loss": 0.5},
        )

    class StubPolicy:
        """rl.policy.Policy's surface as rl/trainer.py uses it; saves adapters, trains nothing."""

        def __init__(self, model_path: str, cfg: Any) -> None:
            self.model_path = model_path
            self.cfg = cfg

        @classmethod
        def load(
            cls,
            model_path: str,
            cfg: Any,
            *,
            adapter_dir: str | None = None,
            serving_dtype: str | None = None,
        ) -> StubPolicy:
            recorder.policy_loads.append({"model_path": model_path, "adapter_dir": adapter_dir})
            return cls(str(Path(model_path).resolve()), cfg)

        def update(self, samples: Any, *, temperature: float, learning_rate: float | None = None) -> dict:
            assert samples, "GRPO asked for an update without samples"
            with recorder.lock:
                recorder.updates += 1
                recorder.update_prompt_turns.append(max(len(s.trace.messages) for s in samples))
            return {"loss": 0.1, "kl": 0.0, "optimizer_steps": 1.0, "train_samples": float(len(samples))}

        def save_adapter(self, directory: Any) -> Path:
            target = Path(directory)
            assert not target.exists(), "adapter versions are immutable"
            recorder.saved.append(str(target))
            return make_adapter(target, rank=self.cfg.lora.r, base_model=self.model_path)

        def save_training_state(self, directory: Path) -> None:
            (Path(directory) / "stub_state.json").write_text("{}")

        def load_training_state(self, directory: Path) -> None:
            pass

        def load_adapter_weights(self, adapter_dir: Any) -> None:
            pass

    # The fake base model has no tokenizer on disk; SFT's length checks are tested in test_sft_data.py.
    original_build = finetune.data.build_sft_data

    def without_tokenizer(runs, **kwargs):
        kwargs["tokenizer"] = None
        return original_build(runs, **kwargs)

    monkeypatch.setattr(finetune.sft, "train_lora", train_lora)
    monkeypatch.setattr(rl.policy, "Policy", StubPolicy)
    monkeypatch.setattr(finetune.data, "build_sft_data", without_tokenizer)


def count_prompt_searches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from dspylite.optimizers import BootstrapFewShotWithRandomSearch

    calls: list[int] = []
    original = BootstrapFewShotWithRandomSearch.compile

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BootstrapFewShotWithRandomSearch, "compile", counted)
    return calls


def overrides(run_dir: Path, server: FakeVLLM) -> list[str]:
    grpo = ["num_steps=2", "examples_per_step=2", "num_rollouts_per_example=2", "val_every=1"]
    grpo += ["rollout_threads=4", "val_threads=4", "tensorboard=false"]
    return [
        f"run_dir={run_dir}",
        f"server.api_base={server.api_base}",
        *(f"task.{k}={v}" for k, v in SIZES.items()),
        "selection_size=4",
        "grpo_valset_size=4",
        "lm.num_threads=4",
        *(f"grpo.{o}" for o in grpo),
        *(f"sft_grpo.{o}" for o in grpo),
        *(f"prompt_grpo.{o}" for o in grpo),
    ]


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch) -> tuple[Recorder, list[int]]:
    """Stub trainers installed: (what they were asked to do, one entry per prompt search)."""
    recorder = Recorder()
    install_stub_trainers(monkeypatch, recorder)
    return recorder, count_prompt_searches(monkeypatch)


def test_the_demo_runs_every_stage_then_a_rerun_loads_them(
    tmp_path: Path, base_dir: Path, stubbed: tuple[Recorder, list[int]]
) -> None:
    recorder, searches = stubbed
    run_dir = tmp_path / "run"

    reply = fact_qa_reply_fn(SERVED_NAME)
    with FakeVLLM(str(base_dir), served_model_name=SERVED_NAME, reply_fn=reply) as server:
        assert run_demo(None, [*overrides(run_dir, server), f"stages={json.dumps(DEMO_STAGES)}"]) == run_dir
        first_served = dict(server.adapters)

    stages = json.loads((run_dir / "stages.json").read_text())
    assert [s["name"] for s in stages] == DEMO_STAGES
    assert [s["index"] for s in stages] == list(range(len(DEMO_STAGES)))
    records = {s["name"]: s for s in stages}
    for record in stages:
        assert len(record["scores"]["dev"]) == 6 and len(record["scores"]["test"]) == 6
        assert Path(record["program_path"]).is_file()
        for name, path in record["adapters"].items():
            assert (Path(path) / "adapter_config.json").is_file(), (record["name"], name)
            assert first_served.get(name) == str(Path(path).resolve()), "a recorded adapter was never served"
        # The recorded adapters are exactly the ones the saved program's predictors are bound to.
        bound = _bound_models(Path(record["program_path"]))
        assert set(record["adapters"]) == bound - {SERVED_NAME}, record["name"]

    def mean(name: str, split: str) -> float:
        scores = records[name]["scores"][split]
        return sum(scores) / len(scores)

    assert records["baseline"]["adapters"] == {}
    assert records["prompt"]["adapters"] == {}
    for name in ("sft", "grpo", "sft_grpo", "prompt_grpo", "better_together"):
        assert len(records[name]["adapters"]) == 1, name  # one adapter bound to both predictors
        assert mean(name, "test") == 1.0 and mean(name, "dev") == 1.0, name
    assert mean("baseline", "test") < 1.0 and mean("baseline", "dev") < 1.0
    assert mean("prompt", "dev") > mean("baseline", "dev")  # its demos fix the base model's answers

    # SFT trained on the passing teacher traces (sft, then BetterTogether's w step); GRPO updated.
    # Both adapters are named after bootstrap.run_name, with a token per compile that keeps them apart.
    assert [c["name"].split("-")[0] for c in recorder.sft] == ["sft", "sft"]
    assert len({c["name"] for c in recorder.sft}) == 2
    assert all(c["rows"] > 0 and Path(c["model_path"]).resolve() == base_dir for c in recorder.sft)
    assert recorder.updates > 0
    # GRPO from the base starts a fresh LoRA; SFT+GRPO starts from the sft record's adapter; prompt+GRPO
    # from the base weights again, on the prompt stage's program: its demos in the rollouts' prompts.
    [sft_adapter] = records["sft"]["adapters"].values()
    assert [load["adapter_dir"] for load in recorder.policy_loads] == [None, sft_adapter, None]
    prompt_demos = _demo_counts(Path(records["prompt"]["program_path"]))
    assert sum(prompt_demos) > 0
    assert _demo_counts(Path(records["prompt_grpo"]["program_path"])) == prompt_demos
    # Its updates trained on prompts with the demo turns (system + user = 2 messages without demos).
    assert max(recorder.update_prompt_turns) > 2
    # GRPO publishes the weights it starts from as its own version 0 (never a reload under the old name).
    assert set(records["sft_grpo"]["adapters"]).isdisjoint(records["sft"]["adapters"])

    report = (run_dir / "report.md").read_text()
    for name in DEMO_STAGES:
        assert DEMO_STAGE_TITLES[name] in report, name
    assert (run_dir / "report.png").read_bytes().startswith(b"\x89PNG")
    job = json.loads((run_dir / "job.json").read_text())
    assert job["status"] == "done" and job["stages"] == DEMO_STAGES
    # Wall time by stage and activity: every stage timed, with the activities its work went to.
    activity = job["activity"]
    assert set(DEMO_STAGES) <= set(activity)
    assert activity["baseline"].keys() >= {"evaluation", "other"}
    assert "program runs" in activity["prompt"] and "rollouts" in activity["grpo"]
    assert "adapter sync" in activity["grpo"] and "program runs" in activity["sft"]
    assert "Wall time by stage and activity" in report

    # ---- the rerun: everything from the records, adapters re-served to a fresh server ------------
    trained = (len(recorder.sft), len(recorder.policy_loads), recorder.updates, len(searches))
    assert trained[3] == 1  # the prompt stage ran one search (BetterTogether's p step reused it)
    with FakeVLLM(str(base_dir), served_model_name=SERVED_NAME, reply_fn=reply) as fresh:
        assert run_demo(None, [*overrides(run_dir, fresh), f"stages={json.dumps(DEMO_STAGES)}"]) == run_dir
        re_served = dict(fresh.adapters)
    assert (len(recorder.sft), len(recorder.policy_loads), recorder.updates, len(searches)) == trained
    wanted = {name: str(Path(p).resolve()) for s in stages for name, p in s["adapters"].items()}
    assert re_served == wanted
    assert json.loads((run_dir / "stages.json").read_text()) == stages
    assert json.loads((run_dir / "job.json").read_text())["status"] == "done"


def test_a_failed_demo_keeps_its_finished_stages_wall_time_and_the_resumed_run_adds_to_it(
    tmp_path: Path, base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dspylite.jobs.demo_job import DemoPipeline

    run_dir = tmp_path / "run"
    reply = fact_qa_reply_fn(SERVED_NAME)
    args = ["stages=[baseline,prompt]"]

    def broken(self, stage_dir):
        raise RuntimeError("killed in the prompt stage")

    with FakeVLLM(str(base_dir), served_model_name=SERVED_NAME, reply_fn=reply) as server:
        with monkeypatch.context() as patch:
            patch.setattr(DemoPipeline, "_prompt", broken)
            with pytest.raises(RuntimeError, match="killed in the prompt stage"):
                run_demo(None, [*overrides(run_dir, server), *args])
        failed = json.loads((run_dir / "job.json").read_text())
        assert failed["status"] == "failed"
        evaluated = failed["activity"]["baseline"]["evaluation"]
        assert evaluated > 0 and "prompt" not in failed["activity"]
        assert run_demo(None, [*overrides(run_dir, server), *args]) == run_dir
    done = json.loads((run_dir / "job.json").read_text())
    assert done["status"] == "done" and done["resumed"] is True
    # The baseline was loaded, not rerun: its evaluation time is the first run's, kept.
    assert done["activity"]["baseline"]["evaluation"] >= evaluated
    assert "program runs" in done["activity"]["prompt"]
    assert "this invocation's: it resumed an earlier run" in (run_dir / "report.md").read_text()


def test_better_together_p_w_p_searches_each_p_step_in_its_own_directory(
    tmp_path: Path, base_dir: Path, stubbed: tuple[Recorder, list[int]]
) -> None:
    # Without the prompt stage nothing is reused: the first p step searches, and the last one searches
    # again for the SFT-bound program. One shared search directory refused the second student.
    recorder, searches = stubbed
    run_dir = tmp_path / "run"
    args = ["stages=[baseline,better_together]", "strategy=p -> w -> p"]
    reply = fact_qa_reply_fn(SERVED_NAME)
    with FakeVLLM(str(base_dir), served_model_name=SERVED_NAME, reply_fn=reply) as server:
        assert run_demo(None, [*overrides(run_dir, server), *args]) == run_dir
    stage_dir = run_dir / "stages" / "better_together"
    bt = json.loads((stage_dir / "bt" / "stages.json").read_text())
    assert [s["name"] for s in bt] == ["baseline", "p", "p -> w", "p -> w -> p"]
    assert len(searches) == 2 and len(recorder.sft) == 1
    assert sorted(d.name for d in stage_dir.iterdir() if d.name[:2] in ("p-", "w-")) == ["p-1", "p-2", "w-1"]
    assert (stage_dir / "p-2" / "search").is_dir()


def test_a_stage_added_on_resume_keeps_the_later_finished_stages_on_record(
    tmp_path: Path, base_dir: Path, stubbed: tuple[Recorder, list[int]]
) -> None:
    # The first run has no prompt stage. A resumed one adds prompt and sft before the finished
    # BetterTogether and is killed in sft, after prompt finished: BetterTogether's record must survive
    # that save. The last run adds only prompt (loaded now) and reaches BetterTogether.
    from dspylite.jobs.demo_job import DemoPipeline

    recorder, searches = stubbed
    run_dir = tmp_path / "run"
    reply = fact_qa_reply_fn(SERVED_NAME)
    resumed = ["stages=[baseline,prompt,better_together]"]

    def killed(self, stage_dir):
        raise RuntimeError("killed in the sft stage")

    with FakeVLLM(str(base_dir), served_model_name=SERVED_NAME, reply_fn=reply) as server:
        run_demo(None, [*overrides(run_dir, server), "stages=[baseline,better_together]"])
        first = {s["name"]: s for s in json.loads((run_dir / "stages.json").read_text())}
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(DemoPipeline, "_sft", killed)
            with pytest.raises(RuntimeError, match="killed in the sft stage"):
                run_demo(None, [*overrides(run_dir, server), "stages=[baseline,prompt,sft,better_together]"])
        on_record = [s["name"] for s in json.loads((run_dir / "stages.json").read_text())]
        assert on_record == ["baseline", "prompt", "better_together"]
        run_demo(None, [*overrides(run_dir, server), *resumed])
    stages = json.loads((run_dir / "stages.json").read_text())
    assert [s["name"] for s in stages] == ["baseline", "prompt", "better_together"]
    assert stages[2] == first["better_together"]  # loaded, not run again
    assert len(recorder.sft) == 1 and len(searches) == 2
    assert "BetterTogether" in (run_dir / "report.md").read_text()


def _demo_counts(program_path: Path) -> list[int]:
    from dspylite.datasets.programs import FactQA

    program = FactQA()
    program.load(program_path)
    return [len(p.demos) for _, p in program.named_predictors()]


def _bound_models(program_path: Path) -> set[str]:
    from dspylite.datasets.programs import FactQA

    program = FactQA()
    program.load(program_path)
    return {p.lm.model for _, p in program.named_predictors() if p.lm is not None}
