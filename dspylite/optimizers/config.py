"""The settings section of each prompt optimizer that has options of its own: ``optimizer.labeled``,
``optimizer.random_search``, ``optimizer.mipro`` and ``optimizer.gepa`` in a job config.

The keys every prompt optimizer shares (seed, LM-call budget, demo bootstrapping) sit one level up,
in ``dspylite.jobs.settings.PromptOptimizerSettings``; ``dspylite.optimizers.table`` ties each section
to its optimizer. Each section follows ``OptimizerSettings``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from dspylite.errors import ConfigError, SettingError

REFLECTION_API_KEY_ENV = "DSPYLITE_REFLECTION_API_KEY"


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def _positive(**values: int | None) -> None:
    for key, value in values.items():
        if value is not None and value <= 0:
            raise SettingError("{} must be > 0, got " + repr(value), key)


def _budget_preset(auto: str) -> str | None:
    return None if auto == "none" else auto


class OptimizerSettings:
    """A section's protocol: ``__post_init__`` checks each key, ``check`` the rules between keys that
    hold only when its optimizer runs (a budget), ``optimizer_kwargs`` its constructor arguments."""

    def check(self) -> None:
        """No rule between keys unless the section has one."""

    def optimizer_kwargs(self, task_lm: Any = None) -> dict[str, Any]:
        raise NotImplementedError


@dataclass
class LabeledSettings(OptimizerSettings):
    """LabeledFewShot: training examples as demos, no LM calls."""

    k: int = field(default=8, metadata=_help("Demos per predictor, drawn from the training labels."))

    def __post_init__(self) -> None:
        _positive(k=self.k)

    def optimizer_kwargs(self, task_lm: Any = None) -> dict[str, Any]:
        return {"k": self.k}


@dataclass
class RandomSearchSettings(OptimizerSettings):
    """BootstrapFewShotWithRandomSearch: several demo sets, each scored on the valset."""

    num_candidate_programs: int = field(
        default=8,
        metadata=_help(
            "Bootstrapped demo sets from shuffled trainsets, scored besides the three fixed ones."
        ),
    )

    def __post_init__(self) -> None:
        _positive(num_candidate_programs=self.num_candidate_programs)

    def optimizer_kwargs(self, task_lm: Any = None) -> dict[str, Any]:
        return {"num_candidate_programs": self.num_candidate_programs}


@dataclass
class MIPROSettings(OptimizerSettings):
    """MIPROv2: instruction proposals and bootstrapped demo sets, combined by a Bayesian search."""

    auto: Literal["light", "medium", "heavy", "none"] = field(
        default="light",
        metadata=_help("Search budget preset; none: num_candidates and num_trials as given."),
    )
    num_candidates: int | None = field(
        default=None,
        metadata=_help("Instruction candidates and demo sets per predictor (null: from auto)."),
    )
    num_trials: int | None = field(
        default=None, metadata=_help("Bayesian-search trials (null: from auto and the program's size).")
    )
    minibatch: bool = field(default=True, metadata=_help("Score trials on minibatches of the valset."))
    minibatch_size: int = field(default=35, metadata=_help("Valset examples per minibatch trial."))

    def __post_init__(self) -> None:
        _positive(
            num_candidates=self.num_candidates, num_trials=self.num_trials, minibatch_size=self.minibatch_size
        )

    def check(self) -> None:
        if self.auto == "none" and (self.num_candidates is None or self.num_trials is None):
            raise SettingError("{}=none needs {} and {}", "auto", "num_candidates", "num_trials")

    def optimizer_kwargs(self, task_lm: Any = None) -> dict[str, Any]:
        return {
            "auto": _budget_preset(self.auto),
            "num_candidates": self.num_candidates,
            "num_trials": self.num_trials,
            "minibatch": self.minibatch,
            "minibatch_size": self.minibatch_size,
        }


@dataclass
class GEPASettings(OptimizerSettings):
    """GEPA: a reflection LM rewrites instructions from the metric's feedback, under a metric-call budget."""

    auto: Literal["light", "medium", "heavy", "none"] = field(
        default="light",
        metadata=_help("Budget preset in metric calls (DSPy's numbers); none: max_metric_calls."),
    )
    max_metric_calls: int | None = field(
        default=None, metadata=_help("Metric-call budget with auto=none (never exceeded).")
    )
    reflection_minibatch_size: int = field(default=3, metadata=_help("Train examples per reflection."))
    candidate_selection_strategy: Literal["pareto", "current_best"] = field(
        default="pareto", metadata=_help("How the parent candidate is picked.")
    )
    use_merge: bool = field(default=True, metadata=_help("Merge candidates from two lineages."))
    reflection_model: str = field(
        default="", metadata=_help("The reflection LM's model name; empty: the task LM's model.")
    )
    reflection_api_base: str = field(
        default="",
        metadata=_help(
            "The reflection LM's OpenAI-compatible endpoint (a larger model elsewhere; its key from env "
            f"{REFLECTION_API_KEY_ENV}); empty: the task server."
        ),
    )
    reflection_temperature: float = field(default=1.0, metadata=_help("Reflection LM temperature."))
    reflection_max_tokens: int = field(default=1024, metadata=_help("Reflection LM completion budget."))

    def __post_init__(self) -> None:
        _positive(
            max_metric_calls=self.max_metric_calls,
            reflection_minibatch_size=self.reflection_minibatch_size,
            reflection_max_tokens=self.reflection_max_tokens,
        )
        if self.reflection_temperature < 0:
            raise SettingError(
                "{} must be >= 0, got " + repr(self.reflection_temperature), "reflection_temperature"
            )

    def check(self) -> None:
        if (self.auto == "none") == (self.max_metric_calls is None):
            raise SettingError(
                "GEPA needs exactly one budget: {}=light|medium|heavy, or {}=none with {}=N",
                "auto",
                "auto",
                "max_metric_calls",
            )

    def optimizer_kwargs(self, task_lm: Any = None) -> dict[str, Any]:
        return {
            "reflection_lm": self.reflection_lm(task_lm),
            "auto": _budget_preset(self.auto),
            "max_metric_calls": self.max_metric_calls if self.auto == "none" else None,
            "reflection_minibatch_size": self.reflection_minibatch_size,
            "candidate_selection_strategy": self.candidate_selection_strategy,
            "use_merge": self.use_merge,
        }

    def reflection_lm(self, task_lm: Any) -> Any:
        """The reflection LM: another endpoint or model when configured, else the task LM, sampling."""
        from dspylite.lm import LM

        sampling = {"temperature": self.reflection_temperature, "max_tokens": self.reflection_max_tokens}
        if self.reflection_api_base:
            return LM(
                self.reflection_model or getattr(task_lm, "model", ""),
                api_base=self.reflection_api_base,
                api_key=os.environ.get(REFLECTION_API_KEY_ENV) or None,
                **sampling,
            )
        if task_lm is None:
            raise ConfigError("GEPA needs a reflection LM: give the task LM or set gepa.reflection_api_base")
        return task_lm.copy(**({"model": self.reflection_model} if self.reflection_model else {}), **sampling)
