"""The one optimizer table: every optimizer's DSPy name, the module that defines it, and for prompt
optimizers the job's ``optimizer.kind`` key and its settings section.

``dspylite.X``, ``dspylite.optimizers.X``, ``dspylite.teleprompt.X``, the jobs' ``optimizer.kind``
and ``dspylite optimize --help`` all read this table, so a new optimizer is one row here. Nothing
here imports an optimizer's module: ``load`` does, when a name is first used.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

SETTINGS_MODULE = "dspylite.optimizers.config"


class OptimizerSpec(NamedTuple):  # a NamedTuple, not a dataclass: `import dspylite` reads this table
    name: str  # the class name, as DSPy spells it
    module: str  # where the class is defined
    kind: str | None = None  # the jobs' optimizer.kind; None: not a prompt optimizer (exports only)
    summary: str = ""  # what it does, in the kind's help text
    settings: str | None = (
        None  # its optimizer.<kind> section, a class of SETTINGS_MODULE; None: shared keys only
    )
    bootstraps_demos: bool = False  # takes the shared demo-bootstrapping keys (max_bootstrapped_demos, ...)
    learns_from_feedback: bool = False  # reads the metric's feedback text: jobs give it the feedback metric

    def load(self) -> type:
        """The optimizer class (imports its module)."""
        return getattr(importlib.import_module(self.module), self.name)

    def settings_class(self) -> type | None:
        """The class of its settings section (None: the shared keys are all it takes)."""
        if self.settings is None:
            return None
        return getattr(importlib.import_module(SETTINGS_MODULE), self.settings)


OPTIMIZERS: tuple[OptimizerSpec, ...] = (
    OptimizerSpec(
        "LabeledFewShot",
        "dspylite.optimizers.labeled_fewshot",
        kind="labeled",
        summary="k training examples as demos",
        settings="LabeledSettings",
    ),
    OptimizerSpec(
        "BootstrapFewShot",
        "dspylite.optimizers.bootstrap",
        kind="bootstrap",
        summary="demos from the program's own passing runs",
        bootstraps_demos=True,
    ),
    OptimizerSpec(
        "BootstrapFewShotWithRandomSearch",
        "dspylite.optimizers.random_search",
        kind="random_search",
        summary="several bootstrapped demo sets, the best on the valset wins",
        settings="RandomSearchSettings",
        bootstraps_demos=True,
    ),
    OptimizerSpec(
        "MIPROv2",
        "dspylite.optimizers.mipro",
        kind="mipro",
        summary="instructions and demos, searched with TPE",
        settings="MIPROSettings",
        bootstraps_demos=True,
    ),
    OptimizerSpec(
        "GEPA",
        "dspylite.optimizers.gepa",
        kind="gepa",
        summary="instructions rewritten by a reflection LM from the metric's feedback",
        settings="GEPASettings",
        learns_from_feedback=True,
    ),
    OptimizerSpec("BootstrapFinetune", "dspylite.optimizers.bootstrap_finetune"),
    OptimizerSpec("GRPO", "dspylite.optimizers.grpo"),
    OptimizerSpec("BetterTogether", "dspylite.teleprompt.bettertogether"),  # DSPy's in-memory form
)

BY_NAME: dict[str, OptimizerSpec] = {spec.name: spec for spec in OPTIMIZERS}
PROMPT_OPTIMIZERS: dict[str, OptimizerSpec] = {spec.kind: spec for spec in OPTIMIZERS if spec.kind}


def prompt_optimizer(kind: str) -> OptimizerSpec:
    """The table row of a job's ``optimizer.kind``; an unknown kind is a ConfigError listing the known ones."""
    from dspylite.errors import ConfigError

    try:
        return PROMPT_OPTIMIZERS[kind]
    except KeyError:
        raise ConfigError(f"optimizer kind {kind!r} is not one of {list(PROMPT_OPTIMIZERS)}") from None


def kinds_help() -> str:
    """``labeled (LabeledFewShot: ...), bootstrap (...), ...``: the kinds, for help texts."""
    return ", ".join(f"{s.kind} ({s.name}: {s.summary})" for s in PROMPT_OPTIMIZERS.values())


def export_optimizers(namespace: dict[str, Any], *also: str) -> None:
    """Give a package (``globals()``) every optimizer of the table as a lazily resolved name: its
    ``__all__`` (the table's names plus ``also``), ``__getattr__`` and ``__dir__``."""
    names = sorted(BY_NAME) + list(also)

    def __getattr__(name: str) -> Any:
        if name not in BY_NAME:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
        value = namespace[name] = BY_NAME[name].load()
        return value

    namespace.update(__all__=names, __getattr__=__getattr__, __dir__=lambda: names)
