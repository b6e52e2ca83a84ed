"""DSPy's module path ``dspy.adapters.chat_adapter``; the implementation is ``dspylite.adapters.chat``."""

from dspylite.adapters.chat import COMPLETED, ChatAdapter, FieldInfoWithName, field_header_pattern, marker

__all__ = ["COMPLETED", "ChatAdapter", "FieldInfoWithName", "field_header_pattern", "marker"]
