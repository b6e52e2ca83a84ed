"""DSPy path ``dspy.primitives.example``."""

from dspylite.example import Example

__all__ = ["Example"]
