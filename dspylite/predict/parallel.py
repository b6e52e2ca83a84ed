"""DSPy path ``dspy.predict.parallel``."""

from dspylite.modules.parallel import Parallel

__all__ = ["Parallel"]
