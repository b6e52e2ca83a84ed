"""DSPy path ``dspy.predict.aggregation``."""

from dspylite.modules.aggregation import majority, default_normalize

__all__ = ["majority", "default_normalize"]
