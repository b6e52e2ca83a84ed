from typing import Any

from dspylite.modules.best_of_n import BestOfN, Refine
from dspylite.modules.chain_of_thought import ChainOfThought
from dspylite.modules.module import Module
from dspylite.modules.predict import Predict
from dspylite.modules.react import ReAct

__all__ = ["Module", "Predict", "ChainOfThought", "ReAct", "Tool", "BestOfN", "Refine"]


def __getattr__(name: str) -> Any:
    if name == "Tool":  # a pydantic type, loaded on first use
        from dspylite.adapters.types.tool import Tool

        return Tool
    raise AttributeError(f"module 'dspylite.modules' has no attribute {name!r}")
