"""DSPy's ``dspy.teleprompt``: every optimizer, plus the ``Teleprompter`` base class.

Names resolve lazily (as in ``dspylite.optimizers``) so weight optimizers import torch/TRL only
when used.
"""

from __future__ import annotations

import importlib
from typing import Any

from dspylite.teleprompt.teleprompt import Teleprompter

_OPTIMIZERS = (
    "LabeledFewShot",
    "BootstrapFewShot",
    "BootstrapFewShotWithRandomSearch",
    "MIPROv2",
    "BootstrapFinetune",
    "GRPO",
    "BetterTogether",
)

__all__ = sorted(_OPTIMIZERS) + ["Teleprompter"]


# DSPy-API classes that live at their DSPy path (see the module for how it differs from dspylite's own).
_DSPY_PATHS = {"BetterTogether": "dspylite.teleprompt.bettertogether"}


def __getattr__(name: str) -> Any:
    if name in _OPTIMIZERS:
        value = getattr(importlib.import_module(_DSPY_PATHS.get(name, "dspylite.optimizers")), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dspylite.teleprompt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
