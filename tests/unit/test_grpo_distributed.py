"""GRPO under ``accelerate launch``: two CPU processes (gloo) train like one.

The same GRPO run (test_grpo_trainer's scripted server, so every step's groups are fixed) runs once in
one process and once as ``accelerate launch --multi_gpu --num_processes 2`` (accelerate's own CLI; on a
machine without GPUs it starts two CPU processes through torchrun, and rl.distributed picks gloo). Rank
0 alone publishes, checkpoints and logs; both ranks train on their share of each step with the gradients
summed, so losses, KL, gradient norms and every published adapter equal the single-process run's.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_grpo_trainer import _config, model_dir  # noqa: F401 - model_dir is a fixture

from dspylite.errors import ConfigError

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")
ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("grpo_dist_driver.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(DRIVER.parent)]),
        CUDA_VISIBLE_DEVICES="",  # the CPU path (gloo) on any machine
    )
    return env


def _drive(model: Path, run_dir: Path, *args: str, processes: int = 1) -> dict:
    if processes == 1:
        command = [sys.executable, str(DRIVER)]
    else:
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.accelerate_cli",  # the `accelerate` console script
            "launch",
            "--multi_gpu",
            "--num_processes",
            str(processes),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(_free_port()),
            str(DRIVER),
        ]
    command += [str(model), str(run_dir), *args]
    proc = subprocess.run(
        command, cwd=run_dir.parent, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((run_dir / "driver.json").read_text())


def _adapters(run_dir: Path) -> dict[int, dict]:
    from safetensors.torch import load_file

    found = {}
    for directory in (run_dir / "adapters").iterdir():
        if directory.is_dir():
            step = int(directory.name.rsplit("-", 1)[1])
            assert step not in found, f"two adapters for step {step}"
            found[step] = load_file(str(directory / "adapter_model.safetensors"))
    return found


def _assert_same_training(one: dict, two: dict, one_dir: Path, two_dir: Path, steps: int) -> None:
    assert two["train_samples"] == one["train_samples"]  # the same groups, all of them trained on
    assert len(one["losses"]) == steps
    # The loss sums advantage-weighted terms that nearly cancel (mean-centred advantages): compare
    # against float32 rounding of the terms, not relative to the near-zero total.
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5, abs=1e-7)
    # k3's exp(d) - d - 1 loses float32 digits for small d: relative 1e-4 is within its noise.
    assert two["kls"] == pytest.approx(one["kls"], rel=1e-4, abs=1e-9)
    # Summed, not averaged: AdamW would hide a halved gradient, the norm does not.
    assert two["grad_norms"] == pytest.approx(one["grad_norms"], rel=1e-5)
    single, double = _adapters(one_dir), _adapters(two_dir)
    assert sorted(double) == sorted(single) == list(range(1, steps + 1))
    for step in single:
        assert single[step].keys() == double[step].keys()
        for key, tensor in single[step].items():
            torch.testing.assert_close(double[step][key], tensor, rtol=1e-5, atol=1e-6)
    last = single[steps]
    assert [k for k in last if "lora_B" in k and float(last[k].abs().max()) > 1e-4]  # it trained


def test_two_processes_under_accelerate_launch_train_like_one(model_dir, tmp_path):  # noqa: F811
    """Two steps, then a resumed launch for the third: rank 0 loads the checkpoint and the worker must
    take its weights and AdamW moments (``sync``), or step 3 drifts from the single-process run's.
    (The scripted LM counts its calls per process, so both runs are compared stopped and resumed alike.)"""
    if not torch.distributed.is_gloo_available():
        pytest.fail("this torch build has no gloo backend: two CPU processes cannot train together")
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    one = _drive(model_dir, one_dir, "num_steps=2")
    two = _drive(model_dir, two_dir, "num_steps=2", processes=2)
    assert (one["world_size"], two["world_size"]) == (1, 2)
    _assert_same_training(one, two, one_dir, two_dir, steps=2)

    one = _drive(model_dir, one_dir, "num_steps=3")  # resumes at step 3
    two = _drive(model_dir, two_dir, "num_steps=3", processes=2)
    _assert_same_training(one, two, one_dir, two_dir, steps=3)

    # Rank 0 alone records: one adapter directory per version (no copy, no temporary leftover), one
    # registry entry each, one metrics row per step, one checkpoint.
    versions = sorted(p.name for p in (two_dir / "adapters").iterdir() if p.is_dir())
    assert len(versions) == 3
    assert sorted(p.name for p in (two_dir / "adapters").iterdir()) == sorted(
        [*versions, "registry.json", "registry.lock"]
    )
    registry = json.loads((two_dir / "adapters" / "registry.json").read_text())["adapters"]
    assert sorted(registry) == versions
    rows = [json.loads(line) for line in (two_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("step") for r in rows] == [0, 1, 2, 3]
    assert [p.name for p in (two_dir / "checkpoints").iterdir() if p.is_dir()] == ["step-00003"]


def test_settings_that_cannot_split_are_refused_naming_the_key():
    from rl.distributed import check_launch

    with pytest.raises(ConfigError, match=r"grpo\.examples_per_step=5 .* multiple of 2 \(4 or 6\)"):
        check_launch(_config(examples_per_step=5), 2)
    with pytest.raises(ConfigError, match=r"grpo\.examples_per_step=2 .* multiple of 4 \(4\)"):
        check_launch(_config(examples_per_step=2), 4)
    with pytest.raises(ConfigError, match=r"grpo\.device='cuda:1'.*grpo\.device=auto"):
        check_launch(_config(examples_per_step=4, device="cuda:1"), 2)
    check_launch(_config(examples_per_step=4), 2)  # fine
    check_launch(_config(examples_per_step=5, device="cuda:1"), 1)  # one process: nothing to split


def test_the_job_refuses_before_starting_anything(monkeypatch, tmp_path):
    """Every rank parses the same config, so every rank stops with the same message, and early."""
    from dspylite.jobs.grpo_job import run_grpo_job

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ConfigError, match=r"grpo\.examples_per_step=3"):
        run_grpo_job(None, {"run_dir": str(tmp_path / "run"), "grpo.examples_per_step": 3})
    assert not (tmp_path / "run").exists()


def test_a_launched_process_without_the_group_is_told_how_to_join(monkeypatch, model_dir):  # noqa: F811
    """A script that builds the policy on every rank of `accelerate launch` would train N unrelated
    copies (and, through the trainer, start N servers): it gets told what to call instead."""
    from dspylite.errors import TrainingError
    from rl.policy import Policy

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(TrainingError, match=r"rl\.distributed\.init_from_env.*run_worker"):
        Policy.load(str(model_dir), _config())


def test_shards_keep_examples_whole_and_cover_every_sample_once():
    from rl.distributed import shard_indices
    from rl.groups import Sample

    samples = []
    for example, (prompt, completion) in enumerate([(9, 30), (4, 5), (6, 12), (3, 3), (8, 20)]):
        for k in range(4):
            samples.append(Sample("p", f"e{example}", 0, k, 0.0, 1.0, [1] * prompt, [2] * (completion + k)))
    shards = [shard_indices(samples, rank, 2) for rank in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(len(samples)))
    for shard in shards:
        examples = {samples[i].example_key for i in shard}
        assert all(
            sum(s.example_key == e for s in samples) == sum(1 for i in shard if samples[i].example_key == e)
            for e in examples
        )
    loads = [
        sum(len(samples[i].prompt_token_ids) + len(samples[i].completion_token_ids) for i in s)
        for s in shards
    ]
    assert max(loads) - min(loads) <= max(
        sum(len(s.prompt_token_ids) + len(s.completion_token_ids) for s in samples if s.example_key == e)
        for e in {s.example_key for s in samples}
    )
    assert shard_indices(samples, 0, 1) == list(range(len(samples)))
