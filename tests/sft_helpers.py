"""Helpers for SFT tests: a micro Llama built in seconds, and program runs shaped like real traces."""

from __future__ import annotations

import random
from pathlib import Path

from dspylite.evaluate import ExampleResult
from dspylite.example import Example
from dspylite.trace import TraceRecord

WORDS = ["red", "blue", "Oslo", "Riga", "cat", "dog", "teacher", "baker", "seven", "twelve", "lamp", "cup"]


def build_micro_model(directory: Path, seed: int = 0) -> Path:
    """A 1-layer Llama (head_dim 32) with a ChatML tokenizer trained on a few hundred lines."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from sources.models.tiny_model.tokenizer import render_chatml, train_tokenizer

    rng = random.Random(seed)
    texts = []
    for _ in range(300):
        question = " ".join(rng.choices(WORDS, k=6))
        texts.append(
            render_chatml(
                [
                    {"role": "system", "content": "Answer the question."},
                    {"role": "user", "content": f"[[ ## question ## ]]\n{question}"},
                    {
                        "role": "assistant",
                        "content": f"[[ ## answer ## ]]\n{rng.choice(WORDS)}\n\n[[ ## completed ## ]]",
                    },
                ]
            )
        )
    tokenizer = train_tokenizer(texts, vocab_size=400, model_max_length=512)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def qa_runs(n: int, *, seed: int = 0, model: str = "micro") -> list[ExampleResult]:
    """``n`` passing one-predictor runs with varied prompt lengths."""
    rng = random.Random(seed)
    runs = []
    for i in range(n):
        question = " ".join(rng.choices(WORDS, k=rng.randint(2, 12)))
        answer = rng.choice(WORDS)
        record = TraceRecord(
            predictor_name="answer",
            signature="question -> answer",
            inputs={"question": question},
            messages=[
                {"role": "system", "content": "Answer the question."},
                {"role": "user", "content": f"[[ ## question ## ]]\n{question}"},
            ],
            completion=f"[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]",
            model=model,
            adapter="chat",
            outputs={"answer": answer},
            example_id=f"ex{i}",
            finish_reason="stop",
        )
        runs.append(ExampleResult(Example(question=question, answer=answer), None, 1.0, traces=[record]))
    return runs
