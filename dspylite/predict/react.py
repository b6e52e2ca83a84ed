"""DSPy path ``dspy.predict.react``."""

from dspylite.modules.react import ReAct, Tool

__all__ = ["ReAct", "Tool"]
