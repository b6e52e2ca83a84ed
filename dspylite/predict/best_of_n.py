"""DSPy path ``dspy.predict.best_of_n``."""

from dspylite.modules.best_of_n import BestOfN

__all__ = ["BestOfN"]
