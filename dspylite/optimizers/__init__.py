"""Optimizers: prompts (demos, instructions) and weights (fine-tuning, RL), with DSPy's names.

Names resolve lazily so ``import dspylite.optimizers`` stays cheap: the weight optimizers pull in
torch/TRL only when they are first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "LabeledFewShot": "dspylite.optimizers.labeled_fewshot",
    "BootstrapFewShot": "dspylite.optimizers.bootstrap",
    "BootstrapFewShotWithRandomSearch": "dspylite.optimizers.random_search",
    "MIPROv2": "dspylite.optimizers.mipro",
    "GEPA": "dspylite.optimizers.gepa",
    "BootstrapFinetune": "dspylite.optimizers.bootstrap_finetune",
    "GRPO": "dspylite.optimizers.grpo",
    "BetterTogether": "dspylite.optimizers.better_together",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dspylite.optimizers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # for type checkers and IDEs
    from dspylite.optimizers.better_together import BetterTogether  # noqa: F401
    from dspylite.optimizers.bootstrap import BootstrapFewShot  # noqa: F401
    from dspylite.optimizers.bootstrap_finetune import BootstrapFinetune  # noqa: F401
    from dspylite.optimizers.gepa import GEPA  # noqa: F401
    from dspylite.optimizers.grpo import GRPO  # noqa: F401
    from dspylite.optimizers.labeled_fewshot import LabeledFewShot  # noqa: F401
    from dspylite.optimizers.mipro import MIPROv2  # noqa: F401
    from dspylite.optimizers.random_search import BootstrapFewShotWithRandomSearch  # noqa: F401
