"""The field types adapters know how to render (``dspy.adapters.types``).

``History`` is a plain class; the others are pydantic models (``dspy.Type``), imported on first use
so that ``import dspylite`` and ``dspylite.Predict`` never load pydantic.
"""

from __future__ import annotations

import importlib
from typing import Any

from dspylite.adapters.types.history import History

_LAZY = {
    "Type": "dspylite.adapters.types.base_type",
    "Image": "dspylite.adapters.types.image",
    "Audio": "dspylite.adapters.types.audio",
    "File": "dspylite.adapters.types.file",
    "Code": "dspylite.adapters.types.code",
    "Reasoning": "dspylite.adapters.types.reasoning",
    "Tool": "dspylite.adapters.types.tool",
    "ToolCalls": "dspylite.adapters.types.tool",
    "ToolCallResults": "dspylite.adapters.types.tool",
    "Citations": "dspylite.adapters.types.citation",
    "Document": "dspylite.adapters.types.document",
}

__all__ = ["History", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dspylite.adapters.types' has no attribute {name!r}")
