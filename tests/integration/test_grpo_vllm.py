"""GRPO against the real vLLM server on the tiny model: the trainer scores exactly the tokens the server
sampled, adapter versions are hot-loaded under new names and stale ones unloaded, metrics are written
per step, and a killed run resumes without redoing finished steps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_policy_scores_the_server_sampled_tokens_like_the_server(vllm_server, tiny_model_dir, tmp_path):
    """Invariant 1: prompt ids + completion ids from the server, fed to the trainer's model without
    re-tokenising, give the server's own log-probs (a fresh LoRA is the identity)."""
    from dspylite.adapters.chat import ChatAdapter
    from dspylite.datasets import load_fact_qa
    from dspylite.datasets.programs import ExtractFact
    from rl.batching import make_batch
    from rl.config import GRPOConfig
    from rl.groups import Sample
    from rl.loss import completion_logprobs
    from rl.policy import Policy

    torch = pytest.importorskip("torch")
    example = load_fact_qa(seed=7, n_train=1, n_dev=0, n_test=0)["train"][0]
    messages = ChatAdapter().format(
        ExtractFact, [], {"context": example.context, "question": example.question}
    )
    lm = vllm_server.lm(max_tokens=32, logprobs=True, cache=False)
    completions = lm.generate(messages, n=2, temperature=1.0)
    policy = Policy.load(str(tiny_model_dir), GRPOConfig(init_adapter="base", threads=1))
    for completion in completions:
        assert completion.prompt_token_ids and completion.token_ids and completion.logprobs
        assert len(completion.logprobs) == len(completion.token_ids)
        sample = Sample("extract", "e", 0, 0, 0.0, 1.0, completion.prompt_token_ids, completion.token_ids)
        with torch.no_grad():
            ours = completion_logprobs(
                policy.model, make_batch([sample], [0], pad_token_id=policy.pad_token_id), temperature=1.0
            )[0].tolist()
        worst = max(abs(a - b) for a, b in zip(ours, completion.logprobs, strict=True))
        assert worst < 0.05, f"trainer and server disagree on a sampled token's log-prob by {worst:.3f}"


def test_grpo_steps_hot_swap_versions_and_resume_after_kill(vllm_server, tmp_path, varied_reward):
    import dspylite as dspy
    from dspylite.datasets import fact_qa_metric, load_fact_qa
    from dspylite.datasets.programs import FactQA
    from dspylite.evaluate import run_one
    from finetune.config import LoraSettings
    from rl.config import GRPOConfig
    from serving.backend import Backend
    from serving.registry import AdapterRegistry

    data = load_fact_qa(seed=11, n_train=12, n_dev=8, n_test=0)
    lm = vllm_server.lm(max_tokens=48)
    run_dir = tmp_path / "run"
    served_after: dict[int, set[str]] = {}

    class Killed(Exception):
        pass

    def watch(step: int, row: dict) -> None:
        served_after[step] = set(vllm_server.adapters())

    def watch_and_kill(step: int, row: dict) -> None:
        watch(step, row)
        if step == 1:
            raise Killed

    reward = varied_reward

    config = GRPOConfig(
        num_steps=2,
        examples_per_step=4,
        num_rollouts_per_example=4,
        val_every=0,
        learning_rate=5e-4,
        init_adapter="base",
        lora=LoraSettings(r=8, alpha=16),
        threads=1,
        rollout_threads=12,
        val_threads=8,
    )

    def make(on_step_end):
        backend = Backend(vllm_server, run_dir=run_dir, base_lm=lm)
        return dspy.GRPO(reward, backend, config, display_progress=False, on_step_end=on_step_end)

    program = FactQA()
    with pytest.raises(Killed):
        make(watch_and_kill).compile(program, trainset=data["train"], valset=data["dev"])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1]
    first = rows[1]
    assert first["updated"], f"step 1 made no update: {first}"
    v1 = first["version"]
    assert v1.startswith("grpo-") and v1.endswith("-1")
    assert v1 in served_after[1]
    for key in (
        "reward_mean",
        "reward_std",
        "zero_variance_fraction",
        "parse_failure_rate",
        "kl",
        "loss",
        "rollout_s",
        "train_s",
        "sync_s",
    ):
        assert first[key] is not None and not (isinstance(first[key], float) and math.isnan(first[key])), key
    assert first["rollouts"] == 16 and first["calls"] >= 16
    assert first["kl"] >= 0.0

    grpo = make(watch)
    tuned = grpo.compile(program, trainset=data["train"], valset=data["dev"])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]  # the killed run's steps were not redone
    second = rows[2]
    assert second["updated"], f"step 2 made no update: {second}"
    v2 = second["version"]
    assert v2 != v1 and v2.endswith("-2")  # a new name for the new weights, never a reload under v1
    assert v2 in served_after[2]
    assert v1 not in served_after[2]  # stale version unloaded (it is neither current nor best)
    registry = AdapterRegistry(run_dir / "adapters")
    assert v1 in registry and v2 in registry
    assert registry.get(v1).path != registry.get(v2).path
    # server.dtype -> VLLMServer.dtype -> Backend.serving_dtype -> Policy -> the adapter's metadata
    metadata = json.loads((Path(registry.get(v2).path) / "dspylite_adapter.json").read_text())
    assert metadata["precision"]["serving_dtype"] == vllm_server.dtype == "float32"

    result = grpo.result
    assert result.start.step == 0 and result.final.step == 2
    assert len(result.start.scores) == len(data["dev"])
    assert "val_score" in second
    # the returned program is bound to the best version, which the server still serves
    models = {p.lm.model for _, p in tuned.named_predictors()}
    assert models == {result.best_version}
    if result.best_version != vllm_server.model_name:
        assert result.best_version in vllm_server.adapters()
    assert {getattr(p.lm, "model", None) for _, p in program.named_predictors()} == {None}  # input untouched
    run = run_one(tuned, data["dev"][0], fact_qa_metric, keep_traces=True)
    assert run.traces and {t.model for t in run.traces} == {result.best_version}
    report = (run_dir / "report.md").read_text()
    assert "Best - start" in report and (run_dir / "report.png").is_file()

    for name in list(vllm_server.adapters()):
        if name.startswith("grpo-"):
            vllm_server.unload_adapter(name)
