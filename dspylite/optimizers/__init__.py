"""Optimizers: prompts (demos, instructions) and weights (fine-tuning, RL), with DSPy's names.

Every name is a row of the optimizer table (``dspylite.optimizers.table``) and resolves lazily, so
``import dspylite.optimizers`` stays cheap: the weight optimizers pull in torch/TRL only when they
are first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dspylite.optimizers.table import export_optimizers

export_optimizers(globals())

if TYPE_CHECKING:  # for type checkers and IDEs
    from dspylite.optimizers.better_together import BetterTogether  # noqa: F401
    from dspylite.optimizers.bootstrap import BootstrapFewShot  # noqa: F401
    from dspylite.optimizers.bootstrap_finetune import BootstrapFinetune  # noqa: F401
    from dspylite.optimizers.gepa import GEPA  # noqa: F401
    from dspylite.optimizers.grpo import GRPO  # noqa: F401
    from dspylite.optimizers.labeled_fewshot import LabeledFewShot  # noqa: F401
    from dspylite.optimizers.mipro import MIPROv2  # noqa: F401
    from dspylite.optimizers.random_search import BootstrapFewShotWithRandomSearch  # noqa: F401
