"""Build (or reuse) the tiny base model directory: tokenizer, pretraining, save, cache.

A build writes into a temporary sibling directory and renames it into place only when complete, so
an interrupted build never leaves a directory that looks like a valid model.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from itertools import islice
from pathlib import Path
from typing import Any

from dspylite.errors import TrainingError
from sources.models.cache import build_once, default_models_root, read_json_marker
from sources.models.tiny_model.plant import plant_copy_circuits
from sources.models.tiny_model.pretrain import StepCallback, llama_config, pack_tokens, pretrain
from sources.models.tiny_model.recipe import TinyModelRecipe
from sources.models.tiny_model.tokenizer import render_chatml, train_tokenizer

logger = logging.getLogger(__name__)

MARKER_FILE = "tiny_model.json"  # written last; its presence and key make a directory a valid build


def read_marker(model_dir: Path) -> dict[str, Any] | None:
    return read_json_marker(model_dir, MARKER_FILE)


def resolve_recipe(seed: int = 0, recipe: TinyModelRecipe | None = None, **overrides: Any) -> TinyModelRecipe:
    base = recipe if recipe is not None else TinyModelRecipe(seed=seed)
    unknown = sorted(set(overrides) - set(asdict(base)))
    if unknown:
        raise TypeError(f"unknown tiny-model recipe option(s) {unknown}; known: {sorted(asdict(base))}")
    return replace(base, **overrides) if overrides else base


def build_tiny_model(
    out_dir: str | Path | None = None,
    seed: int = 0,
    *,
    recipe: TinyModelRecipe | None = None,
    force: bool = False,
    num_threads: int = 1,
    on_step: StepCallback | None = None,
    **overrides: Any,
) -> Path:
    """Return the directory of the tiny model for this recipe, building it if no valid cache exists.

    ``out_dir`` is the model directory itself; by default it is
    ``$DSPYLITE_HOME/models/tiny-llama-<key>`` (``~/.cache/dspylite`` without DSPYLITE_HOME), where the
    key hashes the recipe and the chat format. ``overrides`` are recipe fields (e.g. ``steps=5``).
    ``num_threads``: torch threads while building (restored afterwards). The same seed gives the
    same weights only at the same thread count, since float sums split differently across threads,
    so the default is a fixed 1 (about two minutes on a laptop-class CPU).
    """
    from sources.models.tiny_model.corpus import ChatRenderer

    recipe = resolve_recipe(seed=seed, recipe=recipe, **overrides)
    renderer = ChatRenderer()
    key = recipe.cache_key(renderer.fingerprint())
    target = Path(out_dir) if out_dir is not None else default_models_root() / f"tiny-llama-{key}"
    return build_once(
        target,
        key,
        lambda tmp: _build_into(tmp, recipe, renderer, key, num_threads=num_threads, on_step=on_step),
        marker_file=MARKER_FILE,
        what="tiny-model",
        force=force,
    )


def _build_into(
    directory: Path,
    recipe: TinyModelRecipe,
    renderer: Any,
    key: str,
    *,
    num_threads: int,
    on_step: StepCallback | None,
) -> None:
    import torch

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        _train_and_save(directory, recipe, renderer, key, on_step=on_step)
    finally:
        torch.set_num_threads(previous_threads)


def _train_and_save(
    directory: Path, recipe: TinyModelRecipe, renderer: Any, key: str, *, on_step: StepCallback | None
) -> None:
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    from sources.models.tiny_model.corpus import CorpusGenerator

    started = time.monotonic()

    logger.info("training the tokenizer (vocab %d)", recipe.vocab_size)
    tokenizer_docs = CorpusGenerator(replace(recipe, seed=recipe.seed + 7919), renderer)
    texts = [
        d if isinstance(d, str) else render_chatml(d)
        for d in islice(tokenizer_docs, recipe.tokenizer_documents)
    ]
    tokenizer = train_tokenizer(
        texts, vocab_size=recipe.vocab_size, model_max_length=recipe.max_position_embeddings
    )

    logger.info("generating pretraining text")
    total = recipe.steps * recipe.batch_size * recipe.seq_len
    token_ids, token_weights = pack_tokens(
        tokenizer, CorpusGenerator(recipe, renderer), total, prompt_weight=recipe.prompt_loss_weight
    )

    torch.manual_seed(recipe.seed)
    model = LlamaForCausalLM(llama_config(recipe, tokenizer))
    if recipe.plant_copy_circuits:
        plant_copy_circuits(
            model,
            answer_token_ids=answer_token_ids(tokenizer),
            word_variants=word_variants(tokenizer),
            newline_token_ids=newline_token_ids(tokenizer),
        )
    logger.info(
        "pretraining %.2fM parameters for %d steps on %d tokens",
        sum(p.numel() for p in model.parameters()) / 1e6,
        recipe.steps,
        total,
    )
    stats = pretrain(model, token_ids, token_weights, recipe, on_step=on_step)
    if not torch.isfinite(torch.tensor(stats.final_loss)):
        raise TrainingError(
            f"tiny-model pretraining diverged (final loss {stats.final_loss}); lower learning_rate"
        )

    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    _embed_chat_template(directory, tokenizer.chat_template)
    marker = {
        "cache_key": key,
        "format_fingerprint": renderer.fingerprint(),
        "recipe": recipe.to_dict(),
        "stats": asdict(stats),
        "build_seconds": time.monotonic() - started,
        "torch_threads": torch.get_num_threads(),
    }
    (directory / MARKER_FILE).write_text(json.dumps(marker, indent=2))
    logger.info(
        "pretraining done: loss %.3f -> %.3f in %.0f s",
        stats.first_loss,
        stats.final_loss,
        stats.wall_seconds,
    )


def answer_token_ids(tokenizer: Any) -> list[int]:
    """Ids of every token of every value in the tasks' world (as they appear after a space)."""
    from dspylite.datasets.vocab import CITIES, COLOURS, JOBS, OBJECTS

    values = [*CITIES, *COLOURS, *JOBS, *OBJECTS, *(str(n) for n in range(2, 96))]
    ids = {i for value in values for i in tokenizer(" " + value, add_special_tokens=False)["input_ids"]}
    return sorted(i for i in ids if tokenizer.decode([i]).strip())


def word_variants(tokenizer: Any) -> list[tuple[int, int]]:
    """(bare, space-prefixed) id pairs of the same word, e.g. ("lamp", " lamp")."""
    vocab = tokenizer.get_vocab()
    space = "\u0120"  # byte-level BPE's visible form of a leading space
    return sorted(
        (vocab[token[1:]], token_id)
        for token, token_id in vocab.items()
        if token.startswith(space) and len(token) > 1 and token[1:] in vocab
    )


def newline_token_ids(tokenizer: Any) -> list[int]:
    vocab = tokenizer.get_vocab()
    return sorted(i for t, i in vocab.items() if tokenizer.convert_tokens_to_string([t]).endswith("\n"))


def _embed_chat_template(directory: Path, template: str) -> None:
    """Also keep the template inside tokenizer_config.json, for loaders that only look there."""
    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text())
    if config.get("chat_template") != template:
        config["chat_template"] = template
        path.write_text(json.dumps(config, indent=2, ensure_ascii=False))
