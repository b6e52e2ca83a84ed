"""serving.dtype: the serving precision is chosen for the hardware, overridable, and reaches vLLM's argv."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dspylite.errors import ConfigError
from serving import VLLMServer
from serving.dtype import (
    approx_parameters,
    checkpoint_dtype,
    cpu_has_native_bf16,
    normalize_dtype,
    serving_dtype,
)

AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
AMX = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


@pytest.fixture
def cpuinfo(tmp_path: Path):
    def write(text: str) -> Path:
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        return path

    return write


SMOLLM2_SIZES = {  # SmolLM2-135M-Instruct's config.json
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "vocab_size": 49152,
    "intermediate_size": 1536,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "tie_word_embeddings": True,
}
TINY_SIZES = {"hidden_size": 256, "num_hidden_layers": 4, "vocab_size": 2048, "intermediate_size": 688}


def model_dir(tmp_path: Path, dtype: str | None, sizes: dict | None = None) -> Path:
    directory = tmp_path / f"model-{dtype}-{len(list(tmp_path.iterdir()))}"
    directory.mkdir()
    config = {"model_type": "llama", **(sizes or {})}
    if dtype:
        config["torch_dtype" if dtype == "float16" else "dtype"] = dtype
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_cpu_without_native_bf16_serves_fp32(tmp_path: Path, cpuinfo) -> None:
    path = cpuinfo(AVX2_ONLY)
    assert not cpu_has_native_bf16(path)
    assert serving_dtype(model_dir(tmp_path, "float32"), device="cpu", cpuinfo=path) == "float32"
    # a bf16 checkpoint too: the CPU, not the file, decides what runs fast
    assert serving_dtype(model_dir(tmp_path, "bfloat16"), device="cpu", cpuinfo=path) == "float32"


def test_cpu_with_amx_serves_a_real_size_model_in_bf16_and_a_tiny_one_in_fp32(
    tmp_path: Path, cpuinfo
) -> None:
    path = cpuinfo(AMX)
    assert cpu_has_native_bf16(path)
    assert 130e6 < approx_parameters(model_dir(tmp_path, "float32", SMOLLM2_SIZES)) < 140e6  # "135M"
    assert (
        serving_dtype(model_dir(tmp_path, "float32", SMOLLM2_SIZES), device="cpu", cpuinfo=path) == "bfloat16"
    )
    # measured: bf16 is no faster for a few-million-parameter model, so it keeps its training precision
    assert serving_dtype(model_dir(tmp_path, "float32", TINY_SIZES), device="cpu", cpuinfo=path) == "float32"
    # sizes unknown: the CPU decides
    assert serving_dtype(model_dir(tmp_path, "float32"), device="cpu", cpuinfo=path) == "bfloat16"


def test_gpu_keeps_a_half_precision_checkpoint_and_halves_an_fp32_one(tmp_path: Path) -> None:
    assert serving_dtype(model_dir(tmp_path, "float16"), device="gpu") == "float16"
    assert serving_dtype(model_dir(tmp_path, "bfloat16"), device="gpu") == "bfloat16"
    assert serving_dtype(model_dir(tmp_path, "float32"), device="gpu") == "bfloat16"
    assert serving_dtype(model_dir(tmp_path, None), device="gpu") == "bfloat16"


def test_a_requested_precision_wins_and_is_spelled_for_vllm(tmp_path: Path, cpuinfo) -> None:
    path = cpuinfo(AMX)
    assert serving_dtype(model_dir(tmp_path, "float32"), "fp32", device="cpu", cpuinfo=path) == "float32"
    assert serving_dtype(model_dir(tmp_path, "bfloat16"), "auto", device="gpu") == "bfloat16"
    assert normalize_dtype("BF16") == "bfloat16" and normalize_dtype("half") == "float16"
    with pytest.raises(ConfigError, match=r"server\.dtype='int3'"):
        serving_dtype(tmp_path, "int3", device="cpu")


def test_checkpoint_dtype_reads_both_config_spellings(tmp_path: Path) -> None:
    assert checkpoint_dtype(model_dir(tmp_path, "bfloat16")) == "bfloat16"
    assert checkpoint_dtype(model_dir(tmp_path, "float16")) == "float16"  # written as torch_dtype
    assert checkpoint_dtype(tmp_path / "missing") is None


def test_server_passes_its_dtype_to_vllm_and_extra_args_still_win(tmp_path: Path) -> None:
    base = model_dir(tmp_path, "float32")
    argv = VLLMServer(base, dtype="bf16").command()
    assert argv[argv.index("--dtype") + 1] == "bfloat16"
    auto = VLLMServer(base)
    argv = auto.command()
    assert argv[argv.index("--dtype") + 1] == auto.dtype == serving_dtype(base)
    legacy = VLLMServer(base, dtype="bfloat16", extra_args=["--dtype", "float32"])
    argv = legacy.command()
    assert argv.count("--dtype") == 1 and argv[argv.index("--dtype") + 1] == "float32"
    assert legacy.dtype == "float32"
    assert "--dtype" not in VLLMServer(base, extra_args=["--dtype=float16"]).command()
