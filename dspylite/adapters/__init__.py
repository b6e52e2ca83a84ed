"""Adapters (``dspy.adapters``): how a signature becomes messages and a completion becomes outputs."""

from __future__ import annotations

from typing import Any

from dspylite.adapters.base import Adapter
from dspylite.adapters.chat import ChatAdapter
from dspylite.adapters.json_adapter import JSONAdapter
from dspylite.adapters.types import History
from dspylite.adapters.xml_adapter import XMLAdapter

__all__ = [
    "Adapter",
    "Audio",
    "ChatAdapter",
    "Code",
    "File",
    "History",
    "Image",
    "JSONAdapter",
    "Reasoning",
    "Tool",
    "ToolCallResults",
    "ToolCalls",
    "Type",
    "XMLAdapter",
]


def __getattr__(name: str) -> Any:
    # The pydantic-based types load on first use (see dspylite.adapters.types).
    from dspylite.adapters import types

    if name in types._LAZY:
        return getattr(types, name)
    raise AttributeError(f"module 'dspylite.adapters' has no attribute {name!r}")
