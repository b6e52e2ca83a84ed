"""DSPy's module path ``dspy.adapters.chat_adapter``; the implementation is ``dspylite.adapters.chat``."""

from dspylite.adapters.chat import COMPLETED, ChatAdapter, marker

__all__ = ["COMPLETED", "ChatAdapter", "marker"]
