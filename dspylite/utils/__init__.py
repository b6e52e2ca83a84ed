from dspylite.utils.asyncify import asyncify, syncify
from dspylite.utils.callback import BaseCallback, with_callbacks
from dspylite.utils.dummy_lm import DummyLM
from dspylite.utils.usage_tracker import UsageTracker, track_usage

__all__ = ["BaseCallback", "DummyLM", "UsageTracker", "asyncify", "syncify", "track_usage", "with_callbacks"]
