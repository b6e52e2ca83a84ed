"""One GPU shared by vLLM and training: every placement of a job that trains either arranges the
sharing (sleep mode, or a --gpu-memory-utilization that leaves training room) or stops with an error
naming server.colocate. The GPU is faked: the CUDA build of vLLM is reported by package metadata, and
torch.cuda reports one 24 GiB device."""

from __future__ import annotations

import itertools
import json
import types
from pathlib import Path

import pytest

from dspylite.errors import ConfigError
from serving.colocate import REQUESTS, effective_mode, sleep_mode_available
from serving.config import ServerConfig
from serving.launch import build_server
from serving.memory import GIB
from serving.placement import colocation, placement, plan_placement

SMOLLM2 = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "intermediate_size": 1536,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
}
# Every way to say "GPU 0" on a one-GPU machine: empty (all visible) or the index itself.
ONE_GPU_SPECS = ("", "0")


@pytest.fixture
def model_dir(tmp_path: Path) -> str:
    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2))
    return str(tmp_path)


@pytest.fixture
def one_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with one 24 GiB CUDA GPU and the CUDA build of vLLM (0.32, with sleep mode)."""
    import torch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr("serving.server.vllm_flavor", lambda: "gpu")
    monkeypatch.setattr("serving.server.vllm_version", lambda: "0.32.0")
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda index: types.SimpleNamespace(total_memory=24 * GIB)
    )
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)


def _vllm_keeps_room_for_training(args: dict) -> bool:
    return bool(args.get("enable_sleep_mode")) or args.get("gpu_memory_utilization", 1.0) < 0.9


@pytest.mark.parametrize("old_vllm", [False, True], ids=["sleep-mode", "no-sleep-mode"])
def test_no_one_gpu_placement_leaves_training_and_vllm_unarranged(
    one_gpu: None, model_dir: str, old_vllm: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if old_vllm:
        monkeypatch.setattr("serving.server.vllm_version", lambda: "0.7.3")
    said: list[str] = []
    outcomes = set()
    for devices, train_devices, colocate, memory in itertools.product(
        ONE_GPU_SPECS, ONE_GPU_SPECS, REQUESTS, (None, 0.5)
    ):
        config = ServerConfig(
            devices=devices, train_devices=train_devices, colocate=colocate, gpu_memory_utilization=memory
        )
        where = f"devices={devices!r} train_devices={train_devices!r} colocate={colocate} memory={memory}"
        try:
            args = plan_placement(model_dir, config, said.append)
        except ConfigError as exc:
            assert "server.colocate" in str(exc), where
            assert (colocate, memory) == ("off", None), f"{where}: refused although arranged: {exc}"
            outcomes.add("refused")
            continue
        assert _vllm_keeps_room_for_training(args), f"{where}: vLLM takes its default 90% beside training"
        mode = "sleep" if args.get("enable_sleep_mode") else "split"
        outcomes.add(mode)
        shared = colocation(object(), config, said.append)
        assert shared.mode == ("sleep" if mode == "sleep" else "off"), where
        if colocate == "auto":
            assert mode == ("split" if old_vllm else "sleep"), where
    assert outcomes == {"refused", "sleep", "split"}
    # the automatic choice is said, with what it chose
    chosen = "split" if old_vllm else "sleep"
    assert any(line.startswith(f"server.colocate=auto -> {chosen}:") for line in said), said


def test_the_default_server_section_shares_one_gpu_by_sleeping(one_gpu: None, model_dir: str) -> None:
    said: list[str] = []
    server = build_server(model_dir, ServerConfig(), log_dir="unused", say=said.append)
    assert server.enable_sleep_mode and "--enable-sleep-mode" in server.command()
    assert said == [
        "server.colocate=auto -> sleep: vLLM and training share a GPU; vLLM sleeps (level 1) around each "
        "training phase"
    ]


def test_a_job_refuses_colocate_off_on_a_shared_gpu_before_starting_vllm(
    one_gpu: None, model_dir: str
) -> None:
    with pytest.raises(ConfigError, match=r"server\.colocate=off, but vLLM and training share a GPU"):
        build_server(model_dir, ServerConfig(colocate="off"), log_dir="unused")
    # a hand-sized vLLM is the user's own split
    server = build_server(model_dir, ServerConfig(colocate="off", gpu_memory_utilization=0.4), "unused")
    assert server.gpu_memory_utilization == 0.4 and not server.enable_sleep_mode


def test_separate_gpus_cpu_and_jobs_that_do_not_train_leave_vllm_alone(
    one_gpu: None, model_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for colocate in REQUESTS:
        apart = ServerConfig(devices="0", train_devices="1", colocate=colocate)
        assert placement(apart)[1] == "off"
    # eval, optimize and `dspylite serve` train nothing: auto keeps vLLM's default, off is fine
    for colocate in ("auto", "off"):
        assert plan_placement(model_dir, ServerConfig(colocate=colocate), trains=False) == {}
    monkeypatch.setattr("serving.server.vllm_flavor", lambda: "cpu")
    for colocate in REQUESTS:
        assert placement(ServerConfig(colocate=colocate))[1] == "off"


def test_effective_mode_table() -> None:
    assert effective_mode("auto", flavor="gpu", sleep_available=True) == "sleep"
    assert effective_mode("auto", flavor="gpu", sleep_available=False) == "split"
    assert effective_mode("auto", flavor="gpu", trains=False) == "off"
    assert effective_mode("auto", flavor="gpu", shared=False) == "off"
    assert effective_mode("off", flavor="gpu", memory_set=True) == "off"
    assert effective_mode("off", flavor="gpu", trains=False) == "off"
    with pytest.raises(ConfigError, match="server.colocate=off"):
        effective_mode("off", flavor="gpu")
    assert sleep_mode_available("gpu", "0.32.0") and sleep_mode_available("gpu", "0.8.0+cu128")
    assert not sleep_mode_available("gpu", "0.7.3") and not sleep_mode_available("cpu", "0.32.0")
