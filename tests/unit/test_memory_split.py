"""The memory-split arithmetic against values worked out by hand for two model sizes.

SmolLM2-135M-Instruct: 30 layers, hidden 576, 9 heads / 3 KV heads of 64, MLP 1536, vocab 49152,
tied embeddings. Llama-3-8B: 32 layers, hidden 4096, 32 heads / 8 KV heads of 128, MLP 14336,
vocab 128256, untied.
"""

from __future__ import annotations

import json
import struct

import pytest

from dspylite.errors import ColocationError, ConfigError
from serving.memory import (
    GIB,
    ModelShape,
    count_safetensors_params,
    memory_split,
    serving_memory,
    training_memory,
)

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
LLAMA3_8B = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
}


def test_parameter_counts_match_the_published_sizes():
    # SmolLM2: per layer q 576*576 + k,v 2*576*192 + o 576*576 + MLP 3*576*1536 + norms 2*576
    #   = 331776 + 221184 + 331776 + 2654208 + 1152 = 3540096; x30 = 106202880;
    #   + embeddings 49152*576 = 28311552 (tied) + final norm 576 = 134515008 (the "135M").
    assert ModelShape.from_config(SMOLLM2).params == 134_515_008
    # Llama-3-8B: per layer 16777216 + 2*4194304 + 16777216 + 3*58720256 + 8192 = 218112000;
    #   x32 = 6979584000; + 2 * 128256*4096 (untied) = 1050673152; + 4096 = 8030261248.
    assert ModelShape.from_config(LLAMA3_8B).params == 8_030_261_248


def test_lora_parameters_per_target_set():
    smol = ModelShape.from_config(SMOLLM2)
    # rank 16 on all linears, per layer: 16*(1152 + 768 + 768 + 1152 + 3*2112) = 162816; x30
    assert smol.lora_params(16) == 4_884_480
    # attention only, rank 8: 8*(1152 + 768 + 768 + 1152) = 30720 per layer; x30
    assert smol.lora_params(8, ["q_proj", "k_proj", "v_proj", "o_proj"]) == 921_600
    with pytest.raises(ConfigError, match="c_attn"):
        smol.lora_params(8, ["c_attn"])


def test_training_memory_smollm2_hand_computed():
    smol = ModelShape.from_config(SMOLLM2)
    mem = training_memory(smol, lora_rank=16, batch_size=8, seq_len=512, dtype="bfloat16")
    assert mem.weights == 134_515_008 * 2
    assert mem.lora_states == 4_884_480 * 16
    # per token and layer: 4*576 + 2*576 + 2*192 + 4*1536 = 9984 elements of 2 bytes; 4096 tokens; 30 layers
    assert mem.activations == 9984 * 2 * 4096 * 30 == 2_453_667_840
    # 4096 tokens x 49152 vocab x (2 + 4 + 4) bytes
    assert mem.logits == 2_013_265_920
    assert mem.total == 5_887_857_280

    checkpointed = training_memory(
        smol, lora_rank=16, batch_size=8, seq_len=512, dtype="bfloat16", gradient_checkpointing=True
    )
    # 30 layer inputs of 576 x 2 bytes per token + one layer's full set, 4096 tokens
    assert checkpointed.activations == (30 * 576 * 2 + 9984 * 2) * 4096


def test_training_memory_llama3_8b_hand_computed():
    llama = ModelShape.from_config(LLAMA3_8B)
    mem = training_memory(llama, lora_rank=16, batch_size=4, seq_len=1024, dtype="bf16")
    assert mem.weights == 16_060_522_496
    # rank 16 per layer: 16*(8192 + 5120 + 5120 + 8192 + 3*18432) = 1310720; x32 x 16 bytes
    assert mem.lora_states == 671_088_640
    # 4*4096 + 2*4096 + 2*1024 + 4*14336 = 83968 elements x 2 bytes x 4096 tokens x 32 layers
    assert mem.activations == 22_011_707_392
    assert mem.logits == 4096 * 128256 * 10
    assert mem.total == 45_070_426_112


def test_split_gives_vllm_the_rest_rounded_down():
    llama = ModelShape.from_config(LLAMA3_8B)
    train = training_memory(llama, lora_rank=16, batch_size=4, seq_len=1024)
    serve = serving_memory(llama, max_lora_rank=16, max_loras=4)
    # serving fixed: weights 16060522496 + slots 41943040*4*2 + 1.5 GiB = 18006679552
    assert serve.fixed == 18_006_679_552
    assert serve.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2
    split = memory_split(80 * GIB, train, serve, min_kv_tokens=8192)
    # (85899345920 - 45070426112 - 1 GiB) / 85899345920 = 0.4628 -> 0.46
    assert split.gpu_memory_utilization == 0.46
    # (int(0.46 * 80 GiB) - 18006679552) // 131072
    assert split.kv_tokens == 164_085
    assert "0.46" in split.describe()

    smol = ModelShape.from_config(SMOLLM2)
    small = memory_split(
        24 * GIB,
        training_memory(smol, lora_rank=16, batch_size=8, seq_len=512),
        serving_memory(smol),
        min_kv_tokens=2048,
    )
    # (25769803776 - 5887857280 - 1 GiB) / 25769803776 = 0.7299 -> 0.72
    assert small.gpu_memory_utilization == 0.72


def test_split_refuses_when_training_leaves_too_little():
    llama = ModelShape.from_config(LLAMA3_8B)
    train = training_memory(llama, lora_rank=64, batch_size=16, seq_len=4096)
    with pytest.raises(ColocationError, match="server.colocate=sleep"):
        memory_split(80 * GIB, train, serving_memory(llama), min_kv_tokens=4096)


def test_exact_parameter_count_from_safetensors_headers(tmp_path):
    header = {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "BF16", "shape": [3, 4], "data_offsets": [0, 24]},
        "b": {"dtype": "BF16", "shape": [5], "data_offsets": [24, 34]},
    }
    blob = json.dumps(header).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * 34)
    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2))
    assert count_safetensors_params(tmp_path) == 17
    assert ModelShape.from_dir(tmp_path).params == 17
