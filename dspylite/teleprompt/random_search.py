"""DSPy path ``dspy.teleprompt.random_search``."""

from dspylite.optimizers.random_search import BootstrapFewShotWithRandomSearch

__all__ = ["BootstrapFewShotWithRandomSearch"]
