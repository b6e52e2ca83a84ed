"""DSPy's ``dspy.utils.dummies`` path: the scripted LM for tests."""

from dspylite.utils.dummy_lm import DummyLM

__all__ = ["DummyLM"]
