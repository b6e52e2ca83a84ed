"""DSPy path ``dspy.teleprompt.vanilla``."""

from dspylite.optimizers.labeled_fewshot import LabeledFewShot

__all__ = ["LabeledFewShot"]
