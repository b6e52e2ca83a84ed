"""Training precision follows the hardware like serving does (serving.dtype.hardware_dtype), and bf16
LoRA SFT on a CPU trains to the same loss as fp32."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sft_helpers import build_micro_model, qa_runs

import serving.dtype
from dspylite.errors import TrainingError
from finetune.config import FinetuneConfig, LoraSettings, resolve_precision
from finetune.data import build_sft_data
from finetune.sft import build_sft_trainer, train_dtype
from serving.dtype import hardware_dtype, native_precisions

AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
AMX = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
SMOLLM2 = {
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "vocab_size": 49152,
    "intermediate_size": 1536,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
}


def _model(tmp_path: Path, sizes: dict) -> Path:
    directory = tmp_path / f"m{len(list(tmp_path.iterdir()))}"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "llama", "dtype": "float32", **sizes}))
    return directory


@pytest.fixture
def cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Pretend this machine is an AVX2-only or an AMX CPU (and has no GPU)."""

    def use(flags: str) -> None:
        path = tmp_path / "cpuinfo"
        path.write_text(flags)
        real = serving.dtype.cpu_has_native_bf16
        monkeypatch.setattr(serving.dtype, "cpu_has_native_bf16", lambda cpuinfo=None: real(path))
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    return use


def test_native_precisions_by_cpu_kind(tmp_path: Path) -> None:
    avx2, amx = tmp_path / "avx2", tmp_path / "amx"
    avx2.write_text(AVX2_ONLY)
    amx.write_text(AMX)
    assert native_precisions(device="cpu", cpuinfo=avx2) == ["float32"]
    assert native_precisions(device="cpu", cpuinfo=amx) == ["float32", "bfloat16"]


def test_auto_training_precision_is_the_serving_one(cpu, tmp_path: Path) -> None:
    real, tiny = (
        _model(tmp_path, SMOLLM2),
        _model(
            tmp_path, {"hidden_size": 64, "num_hidden_layers": 1, "vocab_size": 400, "intermediate_size": 128}
        ),
    )
    cpu(AMX)
    assert resolve_precision("auto", model_path=real) == "bfloat16" == hardware_dtype(real, device="cpu")
    assert resolve_precision("auto", model_path=tiny) == "float32"  # too small for bf16 to pay
    assert resolve_precision("bf16") == "bfloat16"
    cpu(AVX2_ONLY)
    assert resolve_precision("auto", model_path=real) == "float32"
    with pytest.raises(TrainingError, match=r"precision='bf16' needs a GPU or a CPU with native bf16"):
        resolve_precision("bf16")
    with pytest.raises(TrainingError, match=r"precision='fp16' needs a GPU"):
        resolve_precision("fp16")


def test_bf16_lora_sft_on_a_cpu_matches_fp32_loss(cpu, tmp_path: Path) -> None:
    cpu(AMX)  # the numerics are the same where bf16 is emulated; only the speed differs
    model = build_micro_model(tmp_path / "micro")
    data = build_sft_data(qa_runs(24), val_fraction=0.0, seed=0)
    losses = {}
    for precision in ("fp32", "bf16"):
        cfg = FinetuneConfig(
            max_steps=4,
            per_device_train_batch_size=6,
            learning_rate=1e-2,
            threads=1,
            max_length=256,
            tensorboard=False,
            save_steps=100,
            logging_steps=1,
            precision=precision,
            lora=LoraSettings(r=4, alpha=8),
        )
        assert train_dtype(cfg, str(model)) == {"fp32": "float32", "bf16": "bfloat16"}[precision]
        trainer = build_sft_trainer(data, cfg, tmp_path / precision, model_path=str(model)).trainer
        if precision == "bf16":  # frozen base in bf16, the trained LoRA weights in fp32
            dtypes = {p.dtype for p in trainer.model.parameters() if p.requires_grad}
            assert dtypes == {torch.float32} and trainer.args.bf16
        trainer.train()
        losses[precision] = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses["bf16"]) == len(losses["fp32"]) == 4
    for bf16, fp32 in zip(losses["bf16"], losses["fp32"], strict=True):
        assert bf16 == pytest.approx(fp32, rel=0.05)
    assert losses["bf16"][-1] < losses["bf16"][0]  # and it learns
