"""DSPy's ``dspy.teleprompt``: every optimizer of the optimizer table, plus the ``Teleprompter`` base class.

Names resolve lazily (as in ``dspylite.optimizers``) so weight optimizers import torch/TRL only
when used.
"""

from __future__ import annotations

from typing import Any

from dspylite.optimizers.table import BY_NAME, resolve
from dspylite.teleprompt.teleprompt import Teleprompter

__all__ = sorted(BY_NAME) + ["Teleprompter"]


def __getattr__(name: str) -> Any:
    value = resolve(name, __name__)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
