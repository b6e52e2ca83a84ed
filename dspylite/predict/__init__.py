"""DSPy's ``dspy.predict``: the predictor modules, re-exported from ``dspylite.modules``."""

from typing import Any

from dspylite.modules.aggregation import majority
from dspylite.modules.best_of_n import BestOfN, Refine
from dspylite.modules.chain_of_thought import ChainOfThought
from dspylite.modules.parallel import Parallel
from dspylite.modules.predict import Predict
from dspylite.modules.react import ReAct

__all__ = ["BestOfN", "ChainOfThought", "Parallel", "Predict", "ReAct", "Refine", "Tool", "majority"]


def __getattr__(name: str) -> Any:
    if name == "Tool":  # a pydantic type, loaded on first use
        from dspylite.adapters.types.tool import Tool

        return Tool
    raise AttributeError(f"module 'dspylite.predict' has no attribute {name!r}")
