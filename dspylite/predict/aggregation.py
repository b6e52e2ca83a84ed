"""DSPy path ``dspy.predict.aggregation``."""

from dspylite.modules.aggregation import default_normalize, majority

__all__ = ["majority", "default_normalize"]
