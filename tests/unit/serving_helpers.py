"""Adapter directories for unit tests, written by hand (no torch, no peft): a PEFT-style
``adapter_config.json`` and a real, minimal safetensors file."""

from __future__ import annotations

import json
import struct
from pathlib import Path


def write_safetensors(path: Path, tensors: dict[str, int]) -> None:
    """A valid safetensors file with one float32 vector of ``size`` zeros per name."""
    header: dict[str, object] = {}
    offset = 0
    for name, size in tensors.items():
        header[name] = {"dtype": "F32", "shape": [size], "data_offsets": [offset, offset + 4 * size]}
        offset += 4 * size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * offset)


def make_adapter(
    directory: Path,
    *,
    rank: int = 8,
    base_model: str | None = "/models/tiny",
    extra_config: dict | None = None,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 16,
        "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": base_model,
        "task_type": "CAUSAL_LM",
        **(extra_config or {}),
    }
    (directory / "adapter_config.json").write_text(json.dumps(config))
    write_safetensors(
        directory / "adapter_model.safetensors",
        {
            "base_model.model.layers.0.self_attn.q_proj.lora_A.weight": rank * 4,
            "base_model.model.layers.0.self_attn.q_proj.lora_B.weight": rank * 4,
        },
    )
    return directory
