"""Input/output types adapters know how to render (``dspy.adapters.types``)."""

from typing import Any

from dspylite.adapters.types.history import History
from dspylite.adapters.types.image import Image

__all__ = ["History", "Image", "Tool"]


def __getattr__(name: str) -> Any:
    if name == "Tool":  # lazy: dspylite.modules.react imports the adapters
        from dspylite.modules.react import Tool

        return Tool
    raise AttributeError(f"module 'dspylite.adapters.types' has no attribute {name!r}")
