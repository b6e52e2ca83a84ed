from dspylite.modules.chain_of_thought import ChainOfThought
from dspylite.modules.module import Module
from dspylite.modules.predict import Predict

__all__ = ["Module", "Predict", "ChainOfThought"]
