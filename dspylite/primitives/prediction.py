"""DSPy path ``dspy.primitives.prediction``."""

from dspylite.example import Completions, Prediction

__all__ = ["Completions", "Prediction"]
