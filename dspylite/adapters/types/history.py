"""``History``: earlier turns of a conversation, given to a predictor as an input field.

Each message is a dict holding some of the signature's input fields (the user's side of the turn)
and output fields (the model's side). Adapters render the turns as prior user/assistant messages
between the demos and the current request, as DSPy's do; the history field itself is not rendered
in the current user message.
"""

from __future__ import annotations

from typing import Any


class History:
    """``History(messages=[{"question": "...", "answer": "..."}, ...])``; immutable once built."""

    __slots__ = ("messages",)

    def __init__(self, messages: list[dict[str, Any]]):
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise TypeError("History(messages=...) takes a list of dicts, one per conversation turn")
        object.__setattr__(self, "messages", [dict(m) for m in messages])

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("History is immutable; build a new one with the extra turn")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, History) and self.messages == other.messages

    def __hash__(self) -> int:
        return hash(repr(self.messages))

    def __repr__(self) -> str:
        return f"History(messages={self.messages!r})"

    def __deepcopy__(self, memo: dict[int, Any]) -> History:
        return self  # immutable

    def model_dump(self, mode: str | None = None) -> dict[str, Any]:
        return {"messages": [dict(m) for m in self.messages]}


def is_history(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, History)


__all__ = ["History", "is_history"]
