"""DSPy path ``dspy.teleprompt.bettertogether``."""

from dspylite.optimizers.better_together import BetterTogether

__all__ = ["BetterTogether"]
