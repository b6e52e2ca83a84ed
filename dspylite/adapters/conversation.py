"""Multi-turn and multimodal message shaping shared by every adapter.

``history_turns`` renders a ``History`` input as prior user/assistant turns; ``with_content_parts``
turns image placeholders in message texts into OpenAI content parts.
"""

from __future__ import annotations

from typing import Any

from dspylite.adapters.types.history import History, is_history
from dspylite.adapters.types.image import split_content_parts


def history_turns(adapter: Any, signature: Any, inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """Messages for every History input field (removed from ``inputs``), oldest turn first.

    A turn's input-field values form its user message and its output-field values its assistant
    message; a turn with no output fields is a user message only.
    """
    turns: list[dict[str, Any]] = []
    for name, field in signature.input_fields.items():
        value = inputs.get(name)
        if not (is_history(field.annotation) or isinstance(value, History)):
            continue
        inputs.pop(name, None)
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(value.get("messages"), list):
            value = History(messages=value["messages"])  # an Example's toDict() form
        if not isinstance(value, History):
            raise TypeError(f"input field {name!r} is a History; got {type(value).__name__}")
        for message in value.messages:
            user = {k: v for k, v in message.items() if k in signature.input_fields and k != name}
            assistant = {k: v for k, v in message.items() if k in signature.output_fields}
            if user:
                turns.append({"role": "user", "content": adapter.format_user(signature, user, is_demo=True)})
            if assistant:
                turns.append(
                    {"role": "assistant", "content": adapter.format_completion(signature, assistant)}
                )
    return turns


def without_history(signature: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """A demo's inputs minus History fields: a demo shows one turn, not the conversation before it."""
    return {
        k: v
        for k, v in inputs.items()
        if not (
            isinstance(v, History)
            or (k in signature.input_fields and is_history(signature.input_fields[k].annotation))
        )
    }


def with_content_parts(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**m, "content": split_content_parts(m["content"])} if isinstance(m.get("content"), str) else m
        for m in messages
    ]


__all__ = ["history_turns", "with_content_parts", "without_history"]
