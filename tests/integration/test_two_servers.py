"""Two real vLLM servers on the tiny model as one backend (server.replicas=2, issue 27): GRPO publishes
every adapter version to both, every rollout's trace names a version that was loaded on the server that
answered it, and after one server is killed mid-run the job finishes on the other.

Starts its own two servers (not the session's), so it needs room for two vLLM processes (~3 GB each on
CPU)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_grpo_over_two_servers_survives_losing_one(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, varied_reward
) -> None:
    import dspylite as dspy
    import rl.trainer
    from dspylite.datasets import load_fact_qa
    from dspylite.datasets.programs import FactQA
    from dspylite.errors import ServingError
    from finetune.config import LoraSettings
    from rl.config import GRPOConfig
    from serving.adapters import list_models
    from serving.backend import Backend
    from serving.config import ServerConfig

    config = ServerConfig(
        replicas=2,
        served_model_name="tiny",
        max_lora_rank=16,
        max_loras=4,
        colocate="off",
        # float32, as the session server: the tiny model's outputs do not depend on batch composition.
        extra_args=["--dtype", "float32"],
    )
    data = load_fact_qa(seed=13, n_train=12, n_dev=4, n_test=0)
    run_dir = tmp_path / "run"

    reward = varied_reward

    grpo_config = GRPOConfig(
        num_steps=3,
        examples_per_step=4,
        num_rollouts_per_example=4,
        val_every=0,
        learning_rate=5e-4,
        init_adapter="base",
        lora=LoraSettings(r=8, alpha=16),
        threads=1,
        rollout_threads=8,
        val_threads=4,
    )

    with Backend.open(str(tiny_model_dir), config, run_dir, lm_kwargs={"max_tokens": 48}) as backend:
        replicas = backend.server
        first, second = replicas.servers
        assert first.api_base != second.api_base

        def served_now() -> dict[str, set[str] | None]:
            """Model names each server lists right now (None: unreachable)."""
            served: dict[str, set[str] | None] = {}
            for base in replicas.api_bases:
                try:
                    served[base] = {str(card["id"]) for card in list_models(base)}
                except ServingError:
                    served[base] = None
            return served

        # Every rollout batch, with what each server served when it was collected.
        batches: list[tuple[object, dict[str, set[str] | None]]] = []
        collect = rl.trainer.collect_rollouts

        def recording_collect(*args, **kwargs):
            batch = collect(*args, **kwargs)
            batches.append((batch, served_now()))
            return batch

        monkeypatch.setattr(rl.trainer, "collect_rollouts", recording_collect)
        loaded_after: dict[int, dict[str, set[str] | None]] = {}

        def on_step_end(step: int, row: dict) -> None:
            loaded_after[step] = served_now()
            if step == 1:  # one server dies mid-run, with all its engine processes
                os.killpg(first.pid, signal.SIGKILL)

        grpo = dspy.GRPO(reward, backend, grpo_config, display_progress=False, on_step_end=on_step_end)
        tuned = grpo.compile(FactQA(), trainset=data["train"], valset=data["dev"])

        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [0, 1, 2, 3]  # the job finished on the surviving server
        assert all(r["updated"] for r in rows[1:]), rows
        # Step 1's version was published to both servers, before one of them died.
        v1 = rows[1]["version"]
        assert all(v1 in names for names in loaded_after[1].values() if names is not None)
        assert loaded_after[1][first.api_base] is not None and loaded_after[1][second.api_base] is not None
        # The dead server left the rotation when the next version could not be loaded there.
        assert first.api_base in replicas.rotation.out and replicas.active_bases == [second.api_base]
        assert rows[2]["version"] in loaded_after[2][second.api_base]
        assert loaded_after[2][first.api_base] is None
        # No rollout was lost to the dead server: requests to it failed over to the other one.
        assert all(r["excluded_rollouts"] == 0 and r["stale_rollouts"] == 0 for r in rows[1:]), rows

        # Every rollout's trace names a version the server that answered it had loaded.
        answered_by: dict[str, int] = {}
        for batch, served in batches:
            for rollout in batch.all:
                for trace in rollout.traces:
                    assert trace.served_by in served, trace.served_by
                    names = served[trace.served_by]
                    assert names is not None and trace.model in names, (trace.served_by, trace.model, names)
                    answered_by[trace.served_by] = answered_by.get(trace.served_by, 0) + 1
        assert set(answered_by) == {first.api_base, second.api_base}  # both answered before the kill
        after_kill = [t for batch, _ in batches[1:] for r in batch.all for t in r.traces]
        assert after_kill and {t.served_by for t in after_kill} == {second.api_base}
        assert grpo.result.best_version in {tuned_lm.model for tuned_lm in _lms(tuned)}
    assert not first.is_running() and not second.is_running()


def _lms(program) -> list:
    return [predictor.lm for _, predictor in program.named_predictors()]
