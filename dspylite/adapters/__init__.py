from dspylite.adapters.base import Adapter
from dspylite.adapters.chat import ChatAdapter
from dspylite.adapters.json_adapter import JSONAdapter

__all__ = ["Adapter", "ChatAdapter", "JSONAdapter"]
