from dspylite.adapters.base import Adapter
from dspylite.adapters.chat import ChatAdapter
from dspylite.adapters.json_adapter import JSONAdapter
from dspylite.adapters.types import History, Image
from dspylite.adapters.xml_adapter import XMLAdapter

__all__ = ["Adapter", "ChatAdapter", "History", "Image", "JSONAdapter", "XMLAdapter"]
