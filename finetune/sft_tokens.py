"""SFT rows -> the token ids and loss mask the trainer uses: what the model saw, then what it said.

TRL, given chat prompt/completion rows, renders ``prompt + completion`` through the chat template and
trains on everything after the prompt. Under a real template that is not what the server sampled:
the template closes the turn with ``<|im_end|>`` *and a newline* (ChatML), so the newline (a token of
the next turn the model never generates) gets a loss; and the joint tokenization can merge tokens
across the prompt/completion boundary or tokenize the completion text differently from the tokens
the model actually produced. So the rows are tokenized here (TRL skips its own tokenization when
``input_ids`` is present) following invariant 1:

* prompt ids: the server's ``prompt_token_ids`` when the row has them, else the chat template
  applied to the prompt with the generation prompt (what vLLM renders);
* completion ids: the server's ``completion_token_ids`` when they decode to the row's completion
  text, else the completion text tokenized on its own (as the model would emit it);
* then the end of the turn up to and including the eos token (``<|im_end|>``), never beyond it,
  unless the server's ids already end with it;
* ``completion_mask``: 0 on the prompt, 1 on the completion and its end-of-turn.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from dspylite.errors import TrainingError

logger = logging.getLogger(__name__)


@dataclass
class TokenizedRow:
    input_ids: list[int]
    completion_mask: list[int]
    from_server: bool  # completion ids are the ones the server returned

    @property
    def prompt_len(self) -> int:
        return self.completion_mask.index(1) if 1 in self.completion_mask else len(self.completion_mask)

    @property
    def completion_ids(self) -> list[int]:
        return self.input_ids[self.prompt_len :]


def end_of_turn(tokenizer: Any, prompt: list[dict[str, Any]], content: str) -> str:
    """The text the chat template puts right after an assistant message, cut after the eos token.

    ChatML: ``"<|im_end|>"`` (its trailing newline belongs to the next turn). A template without the
    eos token after the message: whatever it adds, which then is what the model is taught to emit.
    """
    rendered = tokenizer.apply_chat_template(
        [*prompt, {"role": "assistant", "content": content}], tokenize=False
    )
    opening = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    if not rendered.startswith(opening + content):
        raise TrainingError(
            "the chat template renders the prompt alone differently from the prompt before an assistant "
            "message, so the completion's tokens cannot be located; use a template whose generation prompt is "
            "a prefix of the rendered conversation"
        )
    tail = rendered[len(opening) + len(content) :]
    eos = tokenizer.eos_token
    if eos and eos in tail:
        return tail[: tail.index(eos) + len(eos)]
    return tail


def tokenize_row(tokenizer: Any, row: dict[str, Any]) -> TokenizedRow:
    """One prompt/completion row (with optional server token ids) -> ids and completion mask."""
    prompt, completion = row["prompt"], row["completion"]
    if len(completion) != 1 or completion[0].get("role") != "assistant":
        raise TrainingError("an SFT row's completion must be exactly one assistant message")
    content = completion[0]["content"]
    closing = end_of_turn(tokenizer, prompt, content)
    closing_ids = tokenizer(closing, add_special_tokens=False)["input_ids"] if closing else []
    server_ids = row.get("completion_token_ids")
    from_server = bool(server_ids) and _decodes_to(tokenizer, server_ids, content)
    # The server's prompt ids only when its completion ids check out: both come from one tokenizer.
    prompt_ids = (row.get("prompt_token_ids") if from_server else None) or _ids(
        tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=False)
    )
    if from_server:
        completion_ids = list(server_ids)
        if closing_ids and completion_ids[-len(closing_ids) :] != closing_ids:
            completion_ids += closing_ids  # the server left the stop token out of its ids
    else:
        completion_ids = tokenizer(content, add_special_tokens=False)["input_ids"] + closing_ids
    return TokenizedRow(
        input_ids=list(prompt_ids) + completion_ids,
        completion_mask=[0] * len(prompt_ids) + [1] * len(completion_ids),
        from_server=from_server,
    )


def tokenize_dataset(dataset: Any, tokenizer: Any) -> Any:
    """A ``datasets.Dataset`` of ``input_ids`` + ``completion_mask`` (what SFTTrainer trains on as is)."""
    from datasets import Dataset

    rows = [tokenize_row(tokenizer, row) for row in dataset]
    from_server = sum(r.from_server for r in rows)
    with_ids = sum(1 for row in dataset if row.get("completion_token_ids"))
    if with_ids > from_server:
        logger.warning(
            "%d of %d SFT rows carry server token ids that do not decode to their completion text (another "
            "tokenizer?); their completions were tokenized from the text instead",
            with_ids - from_server,
            with_ids,
        )
    logger.info("SFT rows tokenized: %d of %d completions use the server's token ids", from_server, len(rows))
    return Dataset.from_dict(
        {"input_ids": [r.input_ids for r in rows], "completion_mask": [r.completion_mask for r in rows]}
    )


def _ids(value: Any) -> list[int]:
    ids = value["input_ids"] if isinstance(value, dict) or hasattr(value, "keys") else value
    return list(ids)


def _decodes_to(tokenizer: Any, ids: list[int], text: str) -> bool:
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    return decoded.strip() == text.strip()
