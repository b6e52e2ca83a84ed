from dspylite.utils.dummy_lm import DummyLM

__all__ = ["DummyLM"]
