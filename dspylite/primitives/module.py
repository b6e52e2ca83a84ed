"""DSPy path ``dspy.primitives.module``."""

from dspylite.modules.module import Module

__all__ = ["Module"]
