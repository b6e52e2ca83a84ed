"""DSPy path ``dspy.teleprompt.mipro_optimizer_v2``."""

from dspylite.optimizers.mipro import MIPROv2

__all__ = ["MIPROv2"]
