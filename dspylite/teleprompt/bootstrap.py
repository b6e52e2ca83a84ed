"""DSPy path ``dspy.teleprompt.bootstrap``."""

from dspylite.optimizers.bootstrap import BootstrapFewShot

__all__ = ["BootstrapFewShot"]
