"""DSPy path ``dspy.primitives.module``."""

from dspylite.modules.module import Module, ProgramMeta, logger, set_attribute_by_name

__all__ = ["Module", "ProgramMeta", "logger", "set_attribute_by_name"]
