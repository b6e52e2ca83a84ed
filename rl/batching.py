"""Token batches for the policy update, built from the ids the server sampled (no re-tokenisation).

GRPO samples K completions of the same prompt, and a program's later predictors often see identical
prompts too, so a batch holds each distinct prompt once: the prompts run through the model once
(left-padded, ``use_cache=True``), their key/value cache is gathered per completion row, and the
completions (right-padded) run on top of it. Gradients flow through the shared cache into the
prompt's computation, so the loss and its gradient equal those of K separate prompt+completion
sequences, at the cost of one prompt instead of K.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class TokenBatch:
    prompt_ids: Any  # (U, P) long, distinct prompts left-padded
    prompt_mask: Any  # (U, P) long
    prompt_positions: Any  # (U, P) long: positions count from each prompt's first real token
    prompt_lengths: Any  # (U,) long
    prompt_index: Any  # (B,) long: the prompt row of each completion row
    completion_ids: Any  # (B, C) long, right-padded
    completion_mask: Any  # (B, C) float: 1 on sampled tokens
    advantages: Any  # (B,) float
    sample_indices: list[int]  # completion rows -> positions in the list the batch was built from

    @property
    def num_tokens(self) -> int:
        return int(self.completion_mask.sum())

    def to(self, device: Any) -> TokenBatch:
        """The same batch with its tensors on ``device`` (the policy's, e.g. a GPU)."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            if hasattr(getattr(self, f.name), "to")
            else getattr(self, f.name)
            for f in dataclasses.fields(self)
        }
        return TokenBatch(**moved)


def make_batch(samples: Sequence[Any], indices: Sequence[int], *, pad_token_id: int = 0) -> TokenBatch:
    """Stack ``samples[i]`` for ``i in indices`` (each with prompt/completion token ids and an advantage)."""
    import torch

    rows = [samples[i] for i in indices]
    prompt_rows: dict[tuple[int, ...], int] = {}
    for sample in rows:
        prompt_rows.setdefault(tuple(sample.prompt_token_ids), len(prompt_rows))
    prompts = list(prompt_rows)
    width = max(len(p) for p in prompts)
    prompt_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for u, prompt in enumerate(prompts):
        prompt_ids[u, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        prompt_mask[u, width - len(prompt) :] = 1
    positions = (prompt_mask.cumsum(dim=1) - 1).clamp(min=0)
    lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long)

    completion_len = max(len(s.completion_token_ids) for s in rows)
    completion_ids = torch.full((len(rows), completion_len), pad_token_id, dtype=torch.long)
    completion_mask = torch.zeros((len(rows), completion_len), dtype=torch.float32)
    for r, sample in enumerate(rows):
        completion = sample.completion_token_ids
        completion_ids[r, : len(completion)] = torch.tensor(completion, dtype=torch.long)
        completion_mask[r, : len(completion)] = 1.0
    prompt_index = torch.tensor([prompt_rows[tuple(s.prompt_token_ids)] for s in rows], dtype=torch.long)
    advantages = torch.tensor([float(s.advantage) for s in rows], dtype=torch.float32)
    return TokenBatch(
        prompt_ids,
        prompt_mask,
        positions,
        lengths,
        prompt_index,
        completion_ids,
        completion_mask,
        advantages,
        list(indices),
    )


def batch_cost(prompt_lengths: Sequence[int], completion_lengths: Sequence[int]) -> int:
    """Padded tokens the model processes for a batch: distinct prompts once, completions per row."""
    if not completion_lengths:
        return 0
    return len(prompt_lengths) * max(prompt_lengths) + len(completion_lengths) * max(completion_lengths)


def plan_micro_batches(samples: Sequence[Any], max_tokens: int, max_rows: int) -> list[list[int]]:
    """Split sample indices into micro-batches that keep prompt-sharing samples together.

    Samples with the same prompt form a unit (split into chunks of ``max_rows`` when larger); units
    are taken shortest prompt first so padding stays small, and a micro-batch closes when it would
    exceed ``max_rows`` completion rows or ``max_tokens`` padded tokens (``batch_cost``). A single
    unit larger than ``max_tokens`` still gets its own batch.
    """
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, sample in enumerate(samples):
        by_prompt.setdefault(tuple(sample.prompt_token_ids), []).append(i)
    units: list[list[int]] = []
    for members in by_prompt.values():
        members.sort(key=lambda i: len(samples[i].completion_token_ids))
        units += [members[k : k + max_rows] for k in range(0, len(members), max_rows)]
    units.sort(key=lambda unit: (len(samples[unit[0]].prompt_token_ids), len(unit)))

    batches: list[list[int]] = []
    current: list[int] = []
    prompts: list[int] = []
    completions: list[int] = []
    for unit in units:
        p = len(samples[unit[0]].prompt_token_ids)
        cs = [len(samples[i].completion_token_ids) for i in unit]
        too_many = len(current) + len(unit) > max_rows
        too_big = batch_cost(prompts + [p], completions + cs) > max_tokens
        if current and (too_many or too_big):
            batches.append(current)
            current, prompts, completions = [], [], []
        current += unit
        prompts.append(p)
        completions += cs
    if current:
        batches.append(current)
    return batches
