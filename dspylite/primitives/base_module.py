"""DSPy path ``dspy.primitives.base_module``."""

from dspylite.modules.module import Module

BaseModule = Module

__all__ = ["BaseModule"]
