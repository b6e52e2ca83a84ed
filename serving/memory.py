"""Memory arithmetic for one GPU shared by vLLM and LoRA training.

vLLM takes ``--gpu-memory-utilization`` (default 0.9) of the whole device at start-up, whatever
else runs there; a LoRA SFT or GRPO step started beside it then runs out of memory. This module
estimates what training needs from the model's shape, the LoRA rank and targets, the batch and the
sequence length, and gives vLLM the rest as a utilization fraction (``memory_split``).

The estimates are deliberately simple, stated and testable, not a profiler:

- frozen base weights: ``params x dtype bytes``;
- LoRA: ``rank x (in + out)`` parameters per targeted linear, each costing 16 bytes in training
  (fp32 weight, fp32 gradient, two fp32 AdamW moments; PEFT keeps adapters in fp32);
- activations kept for backward, per token and layer (16-bit elements): the block input and the
  normed input of both norms (4 x hidden), q/k/v and the attention output as SDPA saves them
  (2 x q_dim + 2 x kv_dim), and the gated MLP's gate, up, silu(gate) and product (4 x intermediate).
  Attention scores are not stored (SDPA / flash attention recompute them). With gradient
  checkpointing only each layer's input is kept, plus one layer's full set during its recompute;
- logits: ``tokens x vocab x (dtype bytes + 4 + 4)``: the logits, their fp32 copy for the loss and
  its gradient, usually the largest term for small models with large vocabularies;
- a fixed overhead for the CUDA context, cuBLAS workspaces and allocator slack (``overhead_gib``).

Serving needs the weights, vLLM's preallocated LoRA slots (``max_loras x max_lora_rank`` on every
linear it can adapt, in the model dtype), the KV cache (``2 x layers x kv_heads x head_dim x dtype
bytes`` per token) and its own overhead (activations of the profiling run, CUDA graphs).
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dspylite.errors import ColocationError, ConfigError

GIB = 1024**3

# The training micro-batch the recipes' memory is sized for: a LoRA step on 8 sequences of 1024 tokens
# (finetune's max_length). The memory split (server.colocate=split) leaves training this much, and
# `dspylite doctor` sizes training with it unless told otherwise.
TRAINING_BATCH_SIZE = 8
TRAINING_SEQ_LEN = 1024

DTYPE_BYTES = {
    "float32": 4,
    "fp32": 4,
    "float": 4,
    "bfloat16": 2,
    "bf16": 2,
    "float16": 2,
    "fp16": 2,
    "half": 2,
}

# The linear layers of a Llama-style block; "all-linear" (PEFT's spelling) means all of them.
ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
ALL_LINEAR = ATTENTION_MODULES + MLP_MODULES

# bytes per trainable LoRA parameter: fp32 weight + fp32 grad + AdamW's two fp32 moments
LORA_TRAIN_BYTES_PER_PARAM = 16
# the loss upcasts logits to fp32 (4 bytes) and keeps a fp32 gradient of them (4 bytes)
LOGIT_EXTRA_BYTES = 4 + 4


@dataclass(frozen=True)
class ModelShape:
    """What the memory of a decoder-only (Llama-style) model depends on."""

    params: int
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = True
    architecture: str = "unknown"

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @classmethod
    def from_config(cls, config: Mapping[str, Any], params: int | None = None) -> ModelShape:
        """From a Hugging Face ``config.json`` (Llama, Qwen2, Mistral, SmolLM and alike).

        ``params`` (e.g. counted from the safetensors files) wins over the estimate from the shape.
        """
        text = config.get("text_config")
        if isinstance(text, Mapping):  # multimodal wrappers keep the decoder's shape here
            config = {**config, **text}
        try:
            hidden = int(config["hidden_size"])
            layers = int(config["num_hidden_layers"])
            heads = int(config["num_attention_heads"])
            vocab = int(config["vocab_size"])
            intermediate = int(config["intermediate_size"])
        except KeyError as missing:
            raise ConfigError(
                f"config.json has no {missing.args[0]!r}: only Llama-style decoder configs "
                "(hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, vocab_size) "
                "can be sized"
            ) from None
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or hidden // heads)
        architectures = config.get("architectures") or ["unknown"]
        shape = cls(
            params=0,
            layers=layers,
            hidden=hidden,
            heads=heads,
            kv_heads=kv_heads,
            head_dim=head_dim,
            intermediate=intermediate,
            vocab=vocab,
            tied_embeddings=bool(config.get("tie_word_embeddings", False)),
            architecture=str(architectures[0]),
        )
        return cls(**{**shape.__dict__, "params": params or shape.estimated_params()})

    @classmethod
    def from_dir(cls, model_dir: str | os.PathLike[str]) -> ModelShape:
        """From a checkpoint directory: its config.json, with the parameter count read from the
        safetensors headers when there are any (exact; no weights are loaded)."""
        path = Path(model_dir)
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ConfigError(f"{path} has no config.json; is it a checkpoint directory?")
        config = json.loads(config_file.read_text())
        return cls.from_config(config, params=count_safetensors_params(path) or None)

    def estimated_params(self) -> int:
        """Parameters of a Llama-style decoder with this shape (no biases)."""
        per_layer = sum(n_in * n_out for n_in, n_out in self.linear_shapes().values()) + 2 * self.hidden
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.layers * per_layer + embeddings + self.hidden  # + the final norm

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear layer in one block."""
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    def lora_params(self, rank: int, targets: Sequence[str] | str = "all-linear") -> int:
        """Trainable parameters of a LoRA of ``rank`` on ``targets`` in every layer."""
        shapes = self.linear_shapes()
        names = resolve_targets(targets)
        unknown = [n for n in names if n not in shapes]
        if unknown:
            raise ConfigError(
                f"LoRA target(s) {unknown} are not linear layers of a Llama-style block; "
                f"use some of {list(shapes)} or 'all-linear'"
            )
        return self.layers * sum(rank * (shapes[n][0] + shapes[n][1]) for n in names)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """KV cache per token: keys and values in every layer."""
        return 2 * self.layers * self.kv_dim * dtype_bytes

    def activation_elements_per_token_layer(self) -> int:
        """16-bit elements one block keeps for backward, per token (see the module docstring)."""
        return 4 * self.hidden + 2 * self.q_dim + 2 * self.kv_dim + 4 * self.intermediate


def resolve_targets(targets: Sequence[str] | str) -> list[str]:
    if isinstance(targets, str):
        targets = [targets]
    names: list[str] = []
    for target in targets:
        for name in ALL_LINEAR if target == "all-linear" else (target,):
            if name not in names:
                names.append(name)
    return names


def dtype_bytes(dtype: str) -> int:
    try:
        return DTYPE_BYTES[str(dtype).lower().removeprefix("torch.")]
    except KeyError:
        raise ConfigError(f"dtype {dtype!r} is not one of {sorted(DTYPE_BYTES)}") from None


def count_safetensors_params(model_dir: str | os.PathLike[str]) -> int:
    """Parameters in a directory's ``*.safetensors`` files, read from their JSON headers only."""
    total = 0
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        with file.open("rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(header_len))
        for name, entry in header.items():
            if name != "__metadata__":
                total += math.prod(entry["shape"])
    return total


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes one LoRA training process needs on its device, by part."""

    weights: int
    lora_states: int
    activations: int
    logits: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.lora_states + self.activations + self.logits + self.overhead


def training_memory(
    shape: ModelShape,
    *,
    lora_rank: int,
    lora_targets: Sequence[str] | str = "all-linear",
    batch_size: int,
    seq_len: int,
    dtype: str = "bfloat16",
    gradient_checkpointing: bool = False,
    overhead_gib: float = 1.0,
) -> TrainingMemory:
    """Estimate of a LoRA SFT/GRPO step's peak memory (frozen base in ``dtype``; micro-batch
    ``batch_size`` sequences of ``seq_len`` tokens)."""
    if batch_size < 1 or seq_len < 1 or lora_rank < 1:
        raise ConfigError(
            f"batch_size ({batch_size}), seq_len ({seq_len}) and lora_rank ({lora_rank}) must be >= 1"
        )
    nbytes = dtype_bytes(dtype)
    tokens = batch_size * seq_len
    per_layer = shape.activation_elements_per_token_layer() * nbytes * tokens
    if gradient_checkpointing:
        activations = shape.layers * shape.hidden * nbytes * tokens + per_layer
    else:
        activations = shape.layers * per_layer
    return TrainingMemory(
        weights=shape.params * nbytes,
        lora_states=shape.lora_params(lora_rank, lora_targets) * LORA_TRAIN_BYTES_PER_PARAM,
        activations=activations,
        logits=tokens * shape.vocab * (nbytes + LOGIT_EXTRA_BYTES),
        overhead=int(overhead_gib * GIB),
    )


@dataclass(frozen=True)
class ServingMemory:
    """Bytes vLLM needs besides its KV cache, and the KV cache's price per token."""

    weights: int
    lora_slots: int
    overhead: int
    kv_bytes_per_token: int

    @property
    def fixed(self) -> int:
        return self.weights + self.lora_slots + self.overhead

    def total(self, kv_tokens: int) -> int:
        return self.fixed + kv_tokens * self.kv_bytes_per_token


def serving_memory(
    shape: ModelShape,
    *,
    max_lora_rank: int = 16,
    max_loras: int = 4,
    enable_lora: bool = True,
    dtype: str = "bfloat16",
    overhead_gib: float = 1.5,
) -> ServingMemory:
    """What vLLM needs for ``shape`` besides KV cache. vLLM preallocates LoRA A and B for
    ``max_loras`` slots of ``max_lora_rank`` on every linear of every layer, in the model dtype."""
    nbytes = dtype_bytes(dtype)
    slots = shape.lora_params(max_lora_rank, "all-linear") * max_loras * nbytes if enable_lora else 0
    return ServingMemory(
        weights=shape.params * nbytes,
        lora_slots=slots,
        overhead=int(overhead_gib * GIB),
        kv_bytes_per_token=shape.kv_bytes_per_token(nbytes),
    )


@dataclass(frozen=True)
class MemorySplit:
    """How one device is shared: training's estimate, and the fraction vLLM may take."""

    total_bytes: int
    training: TrainingMemory
    serving: ServingMemory
    gpu_memory_utilization: float
    kv_tokens: int  # KV-cache tokens vLLM has room for at that utilization

    def describe(self) -> str:
        return (
            f"training needs ~{self.training.total / GIB:.1f} GiB of {self.total_bytes / GIB:.1f} GiB; "
            f"vLLM gets --gpu-memory-utilization {self.gpu_memory_utilization:.2f} "
            f"(~{self.kv_tokens:,} KV-cache tokens)"
        )


def memory_split(
    total_bytes: int,
    training: TrainingMemory,
    serving: ServingMemory,
    *,
    min_kv_tokens: int,
    margin_gib: float = 1.0,
) -> MemorySplit:
    """vLLM's ``--gpu-memory-utilization`` when training shares the device.

    vLLM's fraction covers everything it allocates (weights, LoRA slots, activations, KV cache),
    so it gets what is left after training's estimate and a safety ``margin_gib``, rounded down to
    two decimals. ``ColocationError`` when that leaves too little for ``min_kv_tokens`` of KV
    cache (at least one sequence of ``max_model_len``).
    """
    budget = total_bytes - training.total - int(margin_gib * GIB)
    utilization = math.floor(100 * budget / total_bytes) / 100 if budget > 0 else 0.0
    vllm_bytes = int(utilization * total_bytes)
    kv_tokens = max(0, (vllm_bytes - serving.fixed) // serving.kv_bytes_per_token)
    if kv_tokens < min_kv_tokens:
        need = serving.total(min_kv_tokens) + training.total + int(margin_gib * GIB)
        raise ColocationError(
            f"vLLM and training do not fit on one device of {total_bytes / GIB:.1f} GiB: training needs "
            f"~{training.total / GIB:.1f} GiB, vLLM ~{serving.total(min_kv_tokens) / GIB:.1f} GiB for "
            f"{min_kv_tokens} KV tokens (together with the {margin_gib} GiB margin ~{need / GIB:.1f} GiB). "
            "Use server.colocate=sleep, a smaller train batch or sequence length, gradient checkpointing, "
            "or put training on another GPU (server.train_devices)"
        )
    return MemorySplit(total_bytes, training, serving, utilization, int(kv_tokens))
