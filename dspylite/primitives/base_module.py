"""DSPy path ``dspy.primitives.base_module``: ``BaseModule`` (dspylite has one class, ``Module``)."""

from dspylite.modules.module import BaseModule, logger

__all__ = ["BaseModule", "logger"]
