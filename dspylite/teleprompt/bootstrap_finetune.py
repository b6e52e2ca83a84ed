"""DSPy path ``dspy.teleprompt.bootstrap_finetune``."""

from dspylite.optimizers.bootstrap_finetune import BootstrapFinetune

__all__ = ["BootstrapFinetune"]
