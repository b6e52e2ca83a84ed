from dspylite.modules.best_of_n import BestOfN, Refine
from dspylite.modules.chain_of_thought import ChainOfThought
from dspylite.modules.module import Module
from dspylite.modules.predict import Predict
from dspylite.modules.react import ReAct, Tool

__all__ = ["Module", "Predict", "ChainOfThought", "ReAct", "Tool", "BestOfN", "Refine"]
