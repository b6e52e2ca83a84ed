"""DSPy path ``dspy.predict.predict``."""

from dspylite.modules.predict import Predict

__all__ = ["Predict"]
