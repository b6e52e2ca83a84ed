"""`python -m finetune.train` under torchrun with two CPU processes (DDP over gloo).

The multi-GPU recipes (configs/multi_gpu/) run the same module under `accelerate launch`; this is
the part of them a CPU machine can check: both ranks train, exactly one adapter is written, once,
from the main process, and it holds the trained LoRA weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sft_helpers import build_micro_model, qa_runs

from finetune.data import build_sft_data

pytest.importorskip("trl")
ROOT = Path(__file__).resolve().parents[2]


def test_two_process_ddp_training_writes_one_adapter(tmp_path: Path) -> None:
    import torch.distributed

    if not torch.distributed.is_gloo_available():
        pytest.fail("this torch build has no gloo backend: DDP on CPU cannot run")
    model = build_micro_model(tmp_path / "model")
    data = build_sft_data(qa_runs(16), val_fraction=0.0)
    data.save(tmp_path / "data")
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "finetune.train",
        str(ROOT / "configs" / "multi_gpu" / "sft_accelerate.yaml"),
        f"data={tmp_path / 'data'}",
        f"model={model}",
        f"run_dir={run_dir}",
        "adapter_name=ddp-1",
        "sft.precision=fp32",
        "sft.max_steps=2",
        "sft.per_device_train_batch_size=2",
        "sft.max_length=256",
        "sft.lora.r=4",
        "sft.lora.alpha=8",
        "sft.tensorboard=false",
        "sft.save_steps=2",
    ]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    adapters = run_dir / "adapters"
    assert sorted(p.name for p in adapters.iterdir()) == ["ddp-1"]  # no second copy, no leftover tmp dir
    adapter = adapters / "ddp-1"
    assert (adapter / "adapter_model.safetensors").is_file()
    meta = json.loads((adapter / "dspylite_adapter.json").read_text())
    assert meta["world_size"] == 2  # both processes trained, as one DDP job
    assert meta["metrics"]["global_step"] == 2
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert [x["adapter"] for x in lines] == ["ddp-1"]  # only rank 0 reports
    done = [
        r
        for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        if r.get("phase") == "sft_done"
    ]
    assert len(done) == 1  # the main process logs the result once

    from safetensors.torch import load_file

    weights = load_file(str(adapter / "adapter_model.safetensors"))
    lora_b = [t for k, t in weights.items() if "lora_B" in k]
    assert lora_b and any(float(t.abs().sum()) > 0 for t in lora_b)  # trained (LoRA B starts at zero)
