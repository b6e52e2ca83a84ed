"""A structured initialisation that gives the tiny Llama in-context copying from step 0.

Why: every useful skill of the demo task is copying from the prompt (the fact from the context,
the answer from the fact). Transformers learn copying through induction heads, which form only
after far more tokens than a few CPU minutes can process (measured here: a randomly initialised
4-layer model copied 0% of a repeated random sequence after 600 steps, and the Fact QA program
scored 0-4% after 500 steps of task pretraining). So the initialisation builds copying circuits by
hand, and pretraining only has to learn *when* and *what* to copy (the task program then reaches
about a third right in under two minutes of CPU pretraining):

- token embeddings live in the first ``head_dim`` residual dimensions (random unit vectors whose
  last dimension says "leading space or not"; " lamp" and "lamp" share the rest), plus a constant
  dimension that gives attention a position-only signal and a dimension marking possible answers;
- layer 0, head 0 is a previous-token head: its query and key read the constant dimension and,
  through RoPE's high-frequency pairs, score key position m-1 highest for query position m; it
  writes the previous token's embedding into the next ``head_dim`` dimensions;
- layer 1, heads 0 and 1 are induction heads: the query (the current token) matches keys whose
  previous token is the same, using RoPE's low-frequency pairs (nearly position independent at the
  recipe's rope_theta), and writes the matched position's token back into the token dimensions,
  so the tied unembedding predicts it;
- layer 1, head 2 finds answers: it attends to tokens marked as possible answers and copies them;
- every other attention output and MLP output projection starts at zero, so those blocks start as
  the identity and grow as training needs them.

Everything is deterministic for the torch seed and stays a plain ``LlamaForCausalLM``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# How many RoPE frequency pairs the previous-token head uses (the fastest-rotating ones).
_POSITION_PAIRS = 8


def _rope_thetas(config: Any) -> list[float]:
    base = config.rope_parameters["rope_theta"]
    half = config.head_dim // 2
    return [base ** (-j / half) for j in range(half)]


def plant_copy_circuits(
    model: Any,
    *,
    answer_token_ids: Sequence[int] = (),
    word_variants: Sequence[tuple[int, int]] = (),
    newline_token_ids: Sequence[int] = (),
    position_scale: float = 80.0,
    match_scale: float = 20.0,
    copy_gain: float = 4.0,
    answer_scale: float = 15.0,
    answer_gain: float = 3.0,
) -> None:
    """Overwrite ``model``'s initial weights with the copying circuit described in the module doc.

    ``position_scale``: the previous-token head's attention logit on the previous position (its
    neighbours score about 10% lower). ``match_scale``: the induction heads' logit for a matching
    key. ``copy_gain``: how strongly the copied token is written back (the current token has 1).
    ``answer_token_ids``: tokens that can be answers (values in the task's world); when given, a
    third layer-1 head attends to them (logit ``answer_scale``) and copies them (``answer_gain``).
    ``word_variants``: (bare, space-prefixed) token id pairs such as ("lamp", " lamp"); each pair
    shares its token vector and differs only in a "leading space" dimension, so a word copied from
    mid-sentence can be written at the start of a line (the answer field starts after a newline).
    ``newline_token_ids``: tokens ending a line; they lean the next token towards "no leading space".
    """
    import torch

    config = model.config
    d, hd, nh = config.hidden_size, config.head_dim, config.num_attention_heads
    half = hd // 2
    token_dims = hd  # one head carries a whole token embedding
    if config.num_hidden_layers < 2 or nh < 3 or 2 * token_dims + 2 > d:
        raise ValueError(
            f"plant_copy_circuits needs >= 2 layers, >= 3 heads and hidden_size >= 2*head_dim + 2; got "
            f"{config.num_hidden_layers} layers, {nh} heads, hidden {d}, head_dim {hd}"
        )
    thetas = _rope_thetas(config)
    low_pairs = [j for j in range(half) if thetas[j] * config.max_position_embeddings < 0.5]
    if len(low_pairs) < token_dims // 4:  # each induction head matches half the token dims
        raise ValueError(
            f"rope_theta {config.rope_parameters['rope_theta']} leaves only {len(low_pairs)} slow RoPE pairs "
            f"per head; the induction heads need {token_dims // 4}. Raise rope_theta."
        )
    low_pairs = low_pairs[-token_dims // 4 :]
    tok = slice(0, token_dims)
    prev = slice(token_dims, 2 * token_dims)
    const = 2 * token_dims
    answer_dim = const + 1  # marks tokens that can be answers
    answer_mark = 0.5  # small, so RMSNorm scales these tokens almost like the others
    # The last of the token dims says "leading space" (+) or not (-): heads copy it with the word.
    space_dim = token_dims - 1
    space_mark = 0.5
    # After RMSNorm (weight 1) a residual vector x becomes x / rms(x); the planted reads divide by it.
    rms0 = math.sqrt(2.0 / d)  # token (norm 1) + constant (1)
    rms1 = math.sqrt(3.0 / d)  # + previous token (norm 1)

    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb.zero_()
        emb[:, : token_dims - 1] = torch.nn.functional.normalize(
            torch.randn(emb.shape[0], token_dims - 1), dim=-1
        )
        emb[:, const] = 1.0
        for bare, spaced in word_variants:
            emb[spaced, : token_dims - 1] = emb[bare, : token_dims - 1]
            emb[spaced, space_dim] = space_mark
            emb[bare, space_dim] = -space_mark
        if newline_token_ids:
            emb[list(newline_token_ids), space_dim] = -3 * space_mark
        if answer_token_ids:
            emb[list(answer_token_ids), answer_dim] = answer_mark

        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()

        # Layer 0, head 0: previous-token head.
        attn = model.model.layers[0].self_attn
        q, k, v, o = (attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, attn.o_proj.weight)
        q[0:hd].zero_()
        k[0:hd].zero_()
        v[0:hd].zero_()
        a = math.sqrt(position_scale * math.sqrt(hd) / _POSITION_PAIRS)
        for j in range(_POSITION_PAIRS):
            q[j, const] = a * rms0
            k[j, const] = a * math.cos(thetas[j]) * rms0
            k[j + half, const] = a * math.sin(thetas[j]) * rms0
        v[0:hd, tok] = torch.eye(token_dims) * rms0
        o[prev, 0:hd] = torch.eye(token_dims)

        # Layer 1, heads 0 and 1: induction heads, each matching half of the token dimensions.
        attn = model.model.layers[1].self_attn
        q, k, v, o = (attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, attn.o_proj.weight)
        per_head = token_dims // 2
        # A match puts about half of a unit embedding's energy in each head's half of the dims.
        b = math.sqrt(2 * match_scale * math.sqrt(hd))
        for h in range(2):
            rows = slice(h * hd, (h + 1) * hd)
            q[rows].zero_()
            k[rows].zero_()
            v[rows].zero_()
            coords = [c for j in low_pairs for c in (j, j + half)]
            for i, c in enumerate(coords[:per_head]):
                src = h * per_head + i
                if src == space_dim:
                    continue  # match words, not spacing
                q[h * hd + c, src] = b * rms1
                k[h * hd + c, token_dims + src] = b * rms1
            v[rows, tok] = torch.eye(token_dims) * rms1
            o[tok, rows] = torch.eye(token_dims) * (copy_gain / 2)

        # Layer 1, head 2: answer finder. It attends to tokens marked as possible answers wherever
        # it is (its query is the constant) and copies them; training learns when to listen to it.
        if answer_token_ids:
            rows = slice(2 * hd, 3 * hd)
            q[rows].zero_()
            k[rows].zero_()
            v[rows].zero_()
            coords = [c for j in low_pairs[:4] for c in (j, j + half)]
            s = math.sqrt(answer_scale * math.sqrt(hd) / len(coords))
            for c in coords:
                q[2 * hd + c, const] = s * rms1
                k[2 * hd + c, answer_dim] = s * rms1 / answer_mark
            v[rows, tok] = torch.eye(token_dims) * rms1
            o[tok, rows] = torch.eye(token_dims) * answer_gain
