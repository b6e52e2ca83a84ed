"""DSPy path ``dspy.predict.react``."""

from typing import Any

from dspylite.modules.react import ReAct

__all__ = ["ReAct", "Tool"]  # noqa: F822 - Tool resolves through __getattr__


def __getattr__(name: str) -> Any:
    if name == "Tool":
        from dspylite.adapters.types.tool import Tool

        return Tool
    raise AttributeError(f"module 'dspylite.predict.react' has no attribute {name!r}")
