"""DSPy path ``dspy.predict.refine``."""

from dspylite.modules.best_of_n import Refine

__all__ = ["Refine"]
