"""Checks on a PEFT LoRA adapter directory, done before vLLM ever sees it.

vLLM's own errors for a bad adapter arrive late (after the request) and vague ("rank too large"
without the file), so we read the directory ourselves: ``adapter_config.json`` for the rank and the
base model, and the safetensors header of ``adapter_model.safetensors`` to catch truncated or
garbage weight files. Reading the header needs no third-party library: it is an 8-byte length
followed by a JSON table of tensors with their byte offsets.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspylite.errors import AdapterRegistryError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
METADATA_FILE = "dspylite_adapter.json"  # written by the trainers next to the weights: base, data, precision
# A header larger than this is not a LoRA adapter; refusing it keeps a corrupt length from
# making us read gigabytes.
_MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class AdapterInfo:
    """What a valid adapter directory says about itself."""

    path: str  # absolute path to the adapter directory
    rank: int  # the largest LoRA rank in the adapter (``r`` or any ``rank_pattern`` value)
    base_model: str | None  # ``base_model_name_or_path`` from adapter_config.json
    target_modules: list[str] = field(default_factory=list)
    num_tensors: int = 0
    config: dict[str, Any] = field(default_factory=dict, repr=False)


def read_adapter(path: str | os.PathLike[str], *, name: str | None = None) -> AdapterInfo:
    """Validate an adapter directory and return what it declares.

    Raises ``AdapterRegistryError`` naming the adapter and the file at fault when the directory is
    missing, the config is not JSON or lacks a positive integer ``r``, or the weights file is
    missing, truncated or not safetensors.
    """
    label = f"adapter {name!r} at {str(path)!r}" if name else f"adapter at {str(path)!r}"
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise AdapterRegistryError(f"{label}: directory does not exist")
    config = _read_config(directory / CONFIG_FILE, label)
    rank = _rank_of(config, directory / CONFIG_FILE, label)
    num_tensors = _check_safetensors(directory / WEIGHTS_FILE, label)
    base = config.get("base_model_name_or_path")
    targets = config.get("target_modules") or []
    if isinstance(targets, str):  # PEFT allows a regex string here
        targets = [targets]
    return AdapterInfo(
        path=str(directory.resolve()),
        rank=rank,
        base_model=str(base) if base else None,
        target_modules=[str(t) for t in targets],
        num_tensors=num_tensors,
        config=config,
    )


def check_rank(info: AdapterInfo, max_lora_rank: int | None, *, name: str | None = None) -> None:
    """Refuse an adapter whose rank the server was not started to hold."""
    if max_lora_rank is not None and info.rank > max_lora_rank:
        raise AdapterRegistryError(
            f"adapter {name or ''!r} at {info.path!r} has LoRA rank {info.rank}, above the server's "
            f"max_lora_rank={max_lora_rank}; restart the server with --max-lora-rank {info.rank} or "
            "train with a smaller r"
        )


def check_base_model(info: AdapterInfo, server_model: str | None, *, name: str | None = None) -> None:
    """Refuse an adapter trained on another base model than the one the server runs."""
    if server_model is None or info.base_model is None:
        return
    if not same_model(info.base_model, server_model):
        raise AdapterRegistryError(
            f"adapter {name or ''!r} at {info.path!r} was trained on base model {info.base_model!r} "
            f"(adapter_config.json base_model_name_or_path) but the server runs {server_model!r}"
        )


def same_model(a: str, b: str) -> bool:
    """Whether two model references (local paths or hub ids like ``Qwen/Qwen2.5-0.5B``) agree.

    Two local paths agree when they resolve to the same directory. A local path and a hub id agree
    when the path ends with the id's components (``/models/Qwen/Qwen2.5-0.5B``) or its last
    component equals the id's name, which is how people store downloaded checkpoints.
    """
    if a == b:
        return True
    a_local, b_local = _is_local(a), _is_local(b)
    if a_local and b_local:
        return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))
    if a_local != b_local:
        local, hub = (a, b) if a_local else (b, a)
        local_parts = Path(os.path.realpath(os.path.expanduser(local))).parts
        hub_parts = tuple(p for p in hub.strip("/").split("/") if p)
        if not hub_parts:
            return False
        return local_parts[-len(hub_parts) :] == hub_parts or local_parts[-1] == hub_parts[-1]
    return a.strip("/") == b.strip("/")


def _is_local(ref: str) -> bool:
    return os.path.isabs(os.path.expanduser(ref)) or ref.startswith(".") or os.path.exists(ref)


def _read_config(path: Path, label: str) -> dict[str, Any]:
    if not path.is_file():
        raise AdapterRegistryError(f"{label}: missing {CONFIG_FILE}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterRegistryError(f"{label}: {CONFIG_FILE} is not readable JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise AdapterRegistryError(f"{label}: {CONFIG_FILE} must hold a JSON object")
    peft_type = config.get("peft_type")
    if peft_type is not None and str(peft_type).upper() != "LORA":
        raise AdapterRegistryError(f"{label}: {CONFIG_FILE} has peft_type {peft_type!r}; only LORA is served")
    return config


def _rank_of(config: dict[str, Any], path: Path, label: str) -> int:
    rank = config.get("r")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise AdapterRegistryError(f"{label}: {path.name} field 'r' must be a positive integer, got {rank!r}")
    pattern = config.get("rank_pattern") or {}
    if isinstance(pattern, dict):
        ranks = [v for v in pattern.values() if isinstance(v, int) and not isinstance(v, bool)]
        rank = max([rank, *ranks])
    return rank


def _check_safetensors(path: Path, label: str) -> int:
    """Check the weights file is complete safetensors; return its tensor count."""
    if not path.is_file():
        raise AdapterRegistryError(f"{label}: missing {WEIGHTS_FILE}")
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            prefix = fh.read(8)
            if len(prefix) != 8:
                raise ValueError("file shorter than the 8-byte header length")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > _MAX_HEADER_BYTES or 8 + header_len > size:
                raise ValueError(f"header length {header_len} does not fit in a {size}-byte file")
            header = json.loads(fh.read(header_len).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise AdapterRegistryError(f"{label}: {WEIGHTS_FILE} is not valid safetensors ({exc})") from exc
    if not isinstance(header, dict):
        raise AdapterRegistryError(f"{label}: {WEIGHTS_FILE} header is not a JSON object")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if not tensors:
        raise AdapterRegistryError(f"{label}: {WEIGHTS_FILE} holds no tensors")
    data_len = size - 8 - header_len
    for tensor_name, meta in tensors.items():
        offsets = meta.get("data_offsets") if isinstance(meta, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1]):
            raise AdapterRegistryError(f"{label}: {WEIGHTS_FILE} tensor {tensor_name!r} has bad data_offsets")
        if offsets[1] > data_len:
            raise AdapterRegistryError(
                f"{label}: {WEIGHTS_FILE} is truncated (tensor {tensor_name!r} ends at byte {offsets[1]} "
                f"of a {data_len}-byte data section)"
            )
    return len(tensors)
