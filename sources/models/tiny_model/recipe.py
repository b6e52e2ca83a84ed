"""The recipe of the tiny local base model: architecture, pretraining data mix and training budget.

Every field feeds the cache key, so changing any of them builds a new model instead of reusing one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

# Bump when the code that turns a recipe into weights changes in a way the fields do not show.
RECIPE_VERSION = 2


@dataclass(frozen=True)
class TinyModelRecipe:
    seed: int = 0
    # Architecture (Llama). head_dim >= 32 because vLLM's CPU attention needs it.
    vocab_size: int = 3072  # an upper bound: the BPE stops when the generated text has no more merges
    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    head_dim: int = 64
    max_position_embeddings: int = 2048
    # High, so that enough RoPE pairs barely rotate across the context: the planted induction heads
    # match tokens by content on those pairs (see plant.py).
    rope_theta: float = 1e8
    # Start from the hand-built copying circuit (plant.py) instead of a plain random init.
    plant_copy_circuits: bool = True
    # Pretraining budget (full weights, packed sequences, weighted loss: see prompt_loss_weight).
    steps: int = 180
    batch_size: int = 8
    seq_len: int = 256
    learning_rate: float = 1e-3
    warmup_steps: int = 20
    weight_decay: float = 0.01
    # Loss weight of prompt tokens (assistant turns and plain text weigh 1).
    prompt_loss_weight: float = 0.1
    # Data mix: shares of documents by kind (normalised), see corpus.py.
    share_extract: float = 0.4
    share_answer: float = 0.3
    share_topic: float = 0.05
    share_plain: float = 0.25
    # Chats that carry 1-2 demos before the real question (as few-shot programs send them).
    demo_probability: float = 0.25
    # Noise, so the model is unreliable and sampling shows variety (room for SFT and GRPO).
    wrong_target_probability: float = 0.12
    format_noise_probability: float = 0.2
    # How many documents are used to train the tokenizer.
    tokenizer_documents: int = 3000

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TinyModelRecipe:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown tiny-model recipe field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def cache_key(self, format_fingerprint: str) -> str:
        """Hash of the recipe, the code version and how the adapter renders chats."""
        payload = json.dumps(
            {"recipe": self.to_dict(), "version": RECIPE_VERSION, "format": format_fingerprint},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]
