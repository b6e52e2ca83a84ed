"""DSPy's ``dspy.teleprompt``: every optimizer of the optimizer table, plus the ``Teleprompter`` base class.

Names resolve lazily (as in ``dspylite.optimizers``) so weight optimizers import torch/TRL only
when used.
"""

from __future__ import annotations

from dspylite.optimizers.table import export_optimizers
from dspylite.teleprompt.teleprompt import Teleprompter

export_optimizers(globals(), Teleprompter.__name__)
