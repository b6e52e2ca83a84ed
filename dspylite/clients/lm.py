"""DSPy's module path ``dspy.clients.lm``; the implementation is ``dspylite.lm``."""

from dspylite.lm import LM

__all__ = ["LM"]
