"""The tiny-model recipe, built at toy size: a loadable HF directory, its chat template, its cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dspylite.adapters import ChatAdapter
from dspylite.datasets.programs import ExtractFact
from dspylite.errors import TrainingError
from sources.models.tiny_model import TinyModelRecipe, build_tiny_model, read_marker

TOY = dict(
    vocab_size=400,
    hidden_size=96,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=3,
    head_dim=32,
    max_position_embeddings=512,
    steps=3,
    batch_size=2,
    seq_len=64,
    warmup_steps=1,
    tokenizer_documents=150,
)


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0, num_threads=1, **TOY)


def test_toy_build_is_a_normal_hf_model_directory(toy_model: Path) -> None:
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "tiny_model.json",
    ):
        assert (toy_model / name).is_file(), name
    config = json.loads((toy_model / "config.json").read_text())
    assert config["model_type"] == "llama" and config["head_dim"] == 32
    generation = json.loads((toy_model / "generation_config.json").read_text())
    assert generation["eos_token_id"] == config["eos_token_id"]
    assert "chat_template" in json.loads((toy_model / "tokenizer_config.json").read_text())
    marker = read_marker(toy_model)
    assert marker["recipe"]["steps"] == 3 and marker["stats"]["steps"] == 3
    assert marker["stats"]["final_loss"] < marker["stats"]["first_loss"] + 1.0


def test_loads_with_transformers_renders_chat_and_generates(toy_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(toy_model)
    model = AutoModelForCausalLM.from_pretrained(toy_model)
    messages = ChatAdapter().format(ExtractFact, [], {"context": "Ava lives in Paris.", "question": "Where?"})
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    assert tokenizer.eos_token == "<|im_end|>"

    # The assistant turn, and its end-of-turn token, are what the template marks for training.
    chat = [*messages, {"role": "assistant", "content": "[[ ## fact ## ]]\nAva lives in Paris."}]
    encoded = tokenizer.apply_chat_template(
        chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    marked = [t for t, m in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(marked) == "[[ ## fact ## ]]\nAva lives in Paris.<|im_end|>"

    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]


def test_build_is_deterministic_for_a_seed(toy_model: Path, tmp_path: Path) -> None:
    import torch

    torch.set_num_threads(2)
    try:
        again = build_tiny_model(tmp_path / "again", seed=0, num_threads=1, **TOY)
        assert torch.get_num_threads() == 2  # the caller's setting is restored
    finally:
        torch.set_num_threads(1)
    assert (again / "model.safetensors").read_bytes() == (toy_model / "model.safetensors").read_bytes()
    assert (again / "tokenizer.json").read_text() == (toy_model / "tokenizer.json").read_text()


def test_planted_circuit_copies_a_repeated_sequence_before_any_training() -> None:
    import random

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from sources.models.tiny_model.plant import plant_copy_circuits

    config = LlamaConfig(
        vocab_size=300,
        hidden_size=128,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=32,
        max_position_embeddings=512,
        rope_theta=1e8,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    rng = random.Random(0)

    def copy_accuracy() -> float:
        hits = total = 0
        for _ in range(20):
            words = [rng.randrange(10, 300) for _ in range(12)]
            ids = torch.tensor([words + [1] + words])
            with torch.no_grad():
                predicted = model(input_ids=ids).logits[0].argmax(-1)
            # Position 12 + i predicts the second copy's token i; skip its first token (no cue yet).
            for i in range(1, 12):
                hits += int(predicted[12 + i] == words[i])
                total += 1
        return hits / total

    assert copy_accuracy() < 0.2  # a random init does not copy
    plant_copy_circuits(model)
    assert copy_accuracy() > 0.7


def test_same_recipe_reuses_the_cache_and_a_new_recipe_rebuilds(toy_model: Path, tmp_path: Path) -> None:
    weights = toy_model / "model.safetensors"
    before = weights.stat().st_mtime_ns
    again = build_tiny_model(toy_model, seed=0, num_threads=1, **TOY)
    assert again == toy_model and weights.stat().st_mtime_ns == before

    recipe = TinyModelRecipe(**TOY)
    assert recipe.cache_key("f") != TinyModelRecipe(**{**TOY, "steps": 4}).cache_key("f")
    assert recipe.cache_key("f") != recipe.cache_key("another chat format")


def test_default_location_follows_dspylite_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPYLITE_HOME", str(tmp_path))
    path = build_tiny_model(seed=1, num_threads=1, **TOY)
    assert path.parent == tmp_path / "models" and path.name.startswith("tiny-llama-")
    assert read_marker(path)["recipe"]["seed"] == 1


def test_interrupted_build_leaves_nothing_that_looks_valid(tmp_path: Path) -> None:
    def crash(step: int, loss: float) -> None:
        raise KeyboardInterrupt

    target = tmp_path / "model"
    with pytest.raises(KeyboardInterrupt):
        build_tiny_model(target, seed=0, num_threads=1, on_step=crash, **TOY)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_refuses_to_overwrite_a_foreign_directory_and_rejects_unknown_options(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(TrainingError, match="not a tiny-model build"):
        build_tiny_model(foreign, num_threads=1, **TOY)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(TypeError, match="hidden_sise"):
        build_tiny_model(tmp_path / "x", hidden_sise=3)
