"""DSPy path ``dspy.teleprompt.grpo``."""

from dspylite.optimizers.grpo import GRPO

__all__ = ["GRPO"]
