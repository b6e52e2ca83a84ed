"""The GRPO policy-gradient loss, on token ids the server sampled.

Per completion token t of sample i (advantage A_i from its group):

    ratio_t   = exp(logp_t - old_logp_t)
    policy_t  = -min(ratio_t * A_i, clip(ratio_t, 1 - eps_low, 1 + eps_high) * A_i)
    kl_t      = exp(ref_t - logp_t) - (ref_t - logp_t) - 1        (k3 estimator, >= 0)
    loss_t    = policy_t + beta * kl_t

Normalisation (``normalization``):
- ``"token"`` (default): the sum of loss_t over every completion token of the step, divided by the
  number of those tokens. Each sampled token weighs the same, so a long completion is not diluted
  to the weight of a short one (DAPO's choice; TRL calls it ``bnpo``/``dapo``).
- ``"sequence"``: the mean over tokens within each completion, then the mean over completions
  (the original GRPO paper).
``normalizer`` is the denominator of the whole optimisation step (tokens or sequences), so a step
split into micro-batches for memory gives exactly the gradient of the unsplit batch.

Nothing here imports torch at module import time; the functions import it when called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Normalization = Literal["token", "sequence"]


@dataclass
class LossOutput:
    loss: Any  # scalar tensor with grad: this micro-batch's share of the step loss
    policy_loss: float  # same share, policy term only
    kl: float  # sum of kl_t over the micro-batch's tokens (divide by tokens for a mean)
    clipped_tokens: float  # tokens whose clipped term was the active one
    tokens: float


def grpo_loss(
    logps: Any,
    old_logps: Any,
    advantages: Any,
    mask: Any,
    *,
    ref_logps: Any = None,
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    normalization: Normalization = "token",
    normalizer: float | None = None,
) -> LossOutput:
    """GRPO loss for a (micro-)batch.

    ``logps``, ``old_logps``, ``ref_logps``, ``mask``: (B, T) tensors over completion positions
    (``mask`` is 1 on real completion tokens, 0 on padding). ``advantages``: (B,). ``normalizer``:
    total tokens (token mode) or sequences (sequence mode) of the whole step; defaults to this batch's.
    """
    import torch

    if normalization not in ("token", "sequence"):
        raise ValueError(f"normalization must be 'token' or 'sequence', got {normalization!r}")
    if beta and ref_logps is None:
        raise ValueError("beta > 0 needs ref_logps (log-probs under the reference model)")
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    mask = mask.to(logps.dtype)
    adv = advantages.to(logps.dtype).unsqueeze(1)
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)
    unclipped_term = ratio * adv
    clipped_term = clipped * adv
    policy = -torch.min(unclipped_term, clipped_term)
    per_token = policy
    kl = torch.zeros_like(logps)
    if ref_logps is not None:
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1.0
        if beta:
            per_token = per_token + beta * kl

    if normalization == "token":
        denom = float(normalizer) if normalizer is not None else float(mask.sum().clamp(min=1.0))
        loss = (per_token * mask).sum() / denom
        policy_share = float(((policy * mask).sum() / denom).detach())
    else:
        lengths = mask.sum(dim=1).clamp(min=1.0)
        denom = float(normalizer) if normalizer is not None else float(logps.shape[0])
        loss = ((per_token * mask).sum(dim=1) / lengths).sum() / denom
        policy_share = float((((policy * mask).sum(dim=1) / lengths).sum() / denom).detach())
    active_clip = (clipped_term < unclipped_term).to(logps.dtype) * mask
    return LossOutput(
        loss=loss,
        policy_loss=policy_share,
        kl=float((kl.detach() * mask).sum()),
        clipped_tokens=float(active_clip.sum()),
        tokens=float(mask.sum()),
    )


def completion_logprobs(model: Any, batch: Any, *, temperature: float = 1.0) -> Any:
    """Log-probs (B, C) of each completion token under ``model`` at the sampling temperature.

    ``batch`` is a ``rl.batching.TokenBatch``. The distinct prompts run once with ``use_cache=True``
    and only their last position's logits kept (it predicts the first completion token); the cache
    is gathered per completion row (``reorder_cache``), and the completions minus their last token run
    on top of it. Positions continue from each prompt's real length, so left padding moves nothing.
    Values at padded completion positions are meaningless; the loss masks them.
    """
    import torch

    prompt_out = model(
        input_ids=batch.prompt_ids,
        attention_mask=batch.prompt_mask,
        position_ids=batch.prompt_positions,
        use_cache=True,
        logits_to_keep=1,
    )
    index = batch.prompt_index
    first = prompt_out.logits[:, -1, :].float().index_select(0, index).unsqueeze(1)  # (B, 1, V)
    completion_len = batch.completion_ids.shape[1]
    if completion_len > 1:
        cache = prompt_out.past_key_values
        cache.reorder_cache(index)
        steps = completion_len - 1
        attention = torch.cat(
            [batch.prompt_mask.index_select(0, index), (batch.completion_mask[:, :steps] > 0).long()], dim=1
        )
        positions = batch.prompt_lengths.index_select(0, index).unsqueeze(1) + torch.arange(
            steps, device=batch.completion_ids.device
        ).unsqueeze(0)
        out = model(
            input_ids=batch.completion_ids[:, :steps],
            attention_mask=attention,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
        logits = torch.cat([first, out.logits.float()], dim=1)
    else:
        logits = first
    if temperature and temperature != 1.0:
        logits = logits / temperature
    picked = torch.gather(logits, 2, batch.completion_ids.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)
