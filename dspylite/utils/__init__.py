from typing import Any

from dspylite.utils.asyncify import asyncify, syncify
from dspylite.utils.callback import BaseCallback, with_callbacks
from dspylite.utils.usage_tracker import UsageTracker, track_usage

__all__ = ["BaseCallback", "DummyLM", "UsageTracker", "asyncify", "syncify", "track_usage", "with_callbacks"]


_SUBMODULES = {"exceptions", "dummies", "saving", "callback", "parallel", "asyncify", "usage_tracker"}


def __getattr__(name: str) -> Any:
    # DummyLM imports the adapters, which import dspylite.utils.callback: loading it lazily keeps
    # `import dspylite.adapters.chat` (without `import dspylite` first) free of an import cycle.
    if name == "DummyLM":
        from dspylite.utils.dummy_lm import DummyLM

        return DummyLM
    if name in _SUBMODULES:  # dspy.utils.exceptions etc. as attributes, as after DSPy's imports
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
