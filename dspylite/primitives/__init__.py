"""DSPy's ``dspy.primitives``: Example, Prediction, Completions, Module."""

from dspylite.example import Completions, Example, Prediction
from dspylite.modules.module import Module

BaseModule = Module

__all__ = ["BaseModule", "Completions", "Example", "Module", "Prediction"]
