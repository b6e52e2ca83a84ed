"""DSPy's ``dspy.experimental``: ``Citations`` and ``Document`` (pydantic types, loaded on first use)."""

from __future__ import annotations

from typing import Any

__all__ = ["Citations", "Document"]


def __getattr__(name: str) -> Any:
    if name == "Citations":
        from dspylite.adapters.types.citation import Citations

        return Citations
    if name == "Document":
        from dspylite.adapters.types.document import Document

        return Document
    raise AttributeError(f"module 'dspylite.experimental' has no attribute {name!r}")
