"""``Document`` (``dspy.experimental``): a text an LM may quote from, sent as a document content part.

Ported from DSPy 3.3.1 (MIT License); see THIRD_PARTY_NOTICES.md.
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic

from dspylite.adapters.types.base_type import Type


class Document(Type):
    """Experimental: This class may change or be removed in a future release without warning.

    A document with its text (``data``), an optional ``title`` and ``context``; ``Document("text")``
    builds one from the text alone.
    """

    data: str
    title: str | None = None
    media_type: Literal["text/plain", "application/pdf"] = "text/plain"
    context: str | None = None

    def format(self) -> list[dict[str, Any]]:
        document_block: dict[str, Any] = {
            "type": "document",
            "source": {"type": "text", "media_type": self.media_type, "data": self.data},
            "citations": {"enabled": True},
        }
        if self.title:
            document_block["title"] = self.title
        if self.context:
            document_block["context"] = self.context
        return [document_block]

    @classmethod
    def description(cls) -> str:
        return (
            "A document containing text content that can be referenced and cited. "
            "Include the full text content and optionally a title for proper referencing."
        )

    @pydantic.model_validator(mode="before")
    @classmethod
    def validate_input(cls, data: Any):
        if isinstance(data, cls):
            return data
        if isinstance(data, str):
            return {"data": data}
        if isinstance(data, dict):
            return data
        raise ValueError(f"Received invalid value for `Document`: {data}")

    def __str__(self) -> str:
        title_part = f"'{self.title}': " if self.title else ""
        return f"Document({title_part}{len(self.data)} chars)"


__all__ = ["Document"]
