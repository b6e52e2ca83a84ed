"""Full-weight pretraining of the tiny Llama on packed generated text (plain PyTorch, CPU-friendly)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sources.models.tiny_model.recipe import TinyModelRecipe

logger = logging.getLogger(__name__)

StepCallback = Callable[[int, float], None]


@dataclass
class PretrainStats:
    steps: int
    tokens: int
    final_loss: float
    first_loss: float
    wall_seconds: float
    num_parameters: int


def llama_config(recipe: TinyModelRecipe, tokenizer: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_hidden_layers,
        num_attention_heads=recipe.num_attention_heads,
        num_key_value_heads=recipe.num_attention_heads,
        head_dim=recipe.head_dim,
        max_position_embeddings=recipe.max_position_embeddings,
        rope_theta=recipe.rope_theta,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def encode_document(
    tokenizer: Any, document: list[dict[str, str]] | str, prompt_weight: float
) -> tuple[list[int], list[float]]:
    """Token ids of one document and each token's loss weight.

    Chats go through the tokenizer's own chat template (as vLLM renders them); the assistant turns
    (marked by the template's generation block) weigh 1, the prompt ``prompt_weight``, so the few
    minutes of training go to producing outputs rather than to predicting prompts.
    """
    if isinstance(document, str):
        ids = tokenizer(document, add_special_tokens=False)["input_ids"]
        return ids, [1.0] * len(ids)
    encoded = tokenizer.apply_chat_template(
        document, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    weights = [1.0 if m else prompt_weight for m in encoded["assistant_masks"]]
    return list(encoded["input_ids"]), weights


def pack_tokens(
    tokenizer: Any,
    documents: Iterable[list[dict[str, str]] | str],
    total_tokens: int,
    prompt_weight: float = 1.0,
) -> tuple[list[int], list[float]]:
    """Concatenate documents (each followed by the bos token) until ``total_tokens`` ids are collected."""
    ids: list[int] = []
    weights: list[float] = []
    for document in documents:
        doc_ids, doc_weights = encode_document(tokenizer, document, prompt_weight)
        ids.extend(doc_ids)
        weights.extend(doc_weights)
        ids.append(tokenizer.bos_token_id)
        weights.append(prompt_weight)
        if len(ids) >= total_tokens:
            return ids[:total_tokens], weights[:total_tokens]
    raise ValueError(f"the corpus ran out after {len(ids)} tokens; {total_tokens} were needed")


def _learning_rate(recipe: TinyModelRecipe, step: int) -> float:
    """Linear warmup, then cosine decay to a tenth of the peak."""
    if step < recipe.warmup_steps:
        return recipe.learning_rate * (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return recipe.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def pretrain(
    model: Any,
    token_ids: list[int],
    token_weights: list[float],
    recipe: TinyModelRecipe,
    on_step: StepCallback | None = None,
) -> PretrainStats:
    """Train ``model`` in place on ``token_ids`` cut into ``steps`` batches of packed sequences.

    The loss is the cross-entropy of each next token, weighted by ``token_weights``.
    """
    import torch
    import torch.nn.functional as F

    block = recipe.seq_len
    needed = recipe.steps * recipe.batch_size * block
    if len(token_ids) < needed:
        raise ValueError(f"need {needed} tokens for {recipe.steps} steps, got {len(token_ids)}")
    shape = (recipe.steps, recipe.batch_size, block)
    data = torch.tensor(token_ids[:needed], dtype=torch.long).view(shape)
    weight_data = torch.tensor(token_weights[:needed], dtype=torch.float32).view(shape)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.learning_rate,
        betas=(0.9, 0.95),
    )
    model.train()
    start = time.monotonic()
    losses: list[float] = []
    for step in range(recipe.steps):
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(recipe, step)
        batch, weights = data[step], weight_data[step, :, 1:]
        logits = model(input_ids=batch).logits[:, :-1]
        token_loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1), reduction="none"
        )
        loss = (token_loss * weights.reshape(-1)).sum() / weights.sum().clamp_min(1e-6)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
        if step % 20 == 0 or step == recipe.steps - 1:
            logger.info(
                "pretrain step %d/%d loss %.4f (%.0f s)",
                step + 1,
                recipe.steps,
                losses[-1],
                time.monotonic() - start,
            )
    model.eval()
    tail = losses[-10:]
    return PretrainStats(
        steps=recipe.steps,
        tokens=needed,
        final_loss=sum(tail) / len(tail),
        first_loss=losses[0],
        wall_seconds=time.monotonic() - start,
        num_parameters=sum(p.numel() for p in model.parameters()),
    )
