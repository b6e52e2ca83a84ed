"""LM clients, as ``dspy.clients``: ``LM`` (OpenAI-compatible servers) and ``BaseLM`` (custom LMs)."""

from dspylite.clients.base_lm import BaseLM
from dspylite.clients.lm import LM

__all__ = ["BaseLM", "LM"]
