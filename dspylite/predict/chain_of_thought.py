"""DSPy path ``dspy.predict.chain_of_thought``."""

from dspylite.modules.chain_of_thought import ChainOfThought

__all__ = ["ChainOfThought"]
