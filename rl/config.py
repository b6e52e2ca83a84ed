"""The typed GRPO config, loaded from configs/grpo.yaml (section ``grpo``) plus ``key=value`` overrides.

Every field has help text: ``dspylite.config_io.help_table(GRPOConfig)`` lists them. The defaults are
the measured from-base recipe on the tiny model (60 steps of 16 examples x 8 rollouts, T=0.5, lr 1e-3
decaying linearly); configs/grpo.yaml states the same values, and a test keeps the two equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from dspylite.config_io import field_help as _help
from finetune.config import LoraSettings

LR_SCHEDULES = ("linear", "cosine", "constant")


@dataclass
class GRPOConfig:
    # The base model and the run directory are not settings: the caller decides them (the job's `model`
    # and `run_dir`, or the Backend GRPO trains through). A YAML that still sets them fails with these
    # messages (dspylite.config_io) instead of being silently overridden.
    REMOVED_KEYS: ClassVar[dict[str, str]] = {
        "model_path": "the base model is the job's top-level `model` key (in Python: Backend(model_dir=...))",
        "run_dir": "the run directory is the job's top-level `run_dir` key (in Python: Backend(run_dir=...))",
    }
    # ---- where
    run_name: str = field(
        default="grpo",
        metadata=_help(
            "Adapter versions are named <run_name>-<session>-<step>; <session> is random per run start, so a name is "
            "never reused, even across runs that share a cache or a server."
        ),
    )
    init_adapter: str | None = field(
        default=None,
        metadata=_help(
            "Where the policy starts. A LoRA adapter directory (e.g. BootstrapFinetune's); 'base' for a fresh LoRA on "
            "the base model; empty: the adapter the program is bound to when the server handle knows its path, "
            "else 'base'."
        ),
    )
    resume: bool = field(
        default=True, metadata=_help("Resume from the latest checkpoint in run_dir when one exists.")
    )
    # ---- rollouts
    num_steps: int = field(default=60, metadata=_help("Optimisation steps (rollouts -> update -> sync)."))
    examples_per_step: int = field(
        default=16, metadata=_help("Train examples sampled per step (epoch order).")
    )
    dynamic_sampling_rounds: int = field(
        default=0,
        metadata=_help(
            "Extra rollout rounds per step (DAPO's dynamic sampling): while fewer than examples_per_step "
            "examples have reward variance across their rollouts, roll out the next examples_per_step "
            "examples too, at most this many more times. 0: one round."
        ),
    )
    num_rollouts_per_example: int = field(
        default=8, metadata=_help("K: program runs per example per step; the group size (>= 2).")
    )
    temperature: float = field(
        default=0.5,
        metadata=_help(
            "Sampling temperature of rollouts (> 0); the loss scores tokens at the same temperature."
        ),
    )
    max_tokens: int = field(
        default=0, metadata=_help("Completion length limit of rollout calls; 0 keeps the LM's max_tokens.")
    )
    format_failure_reward: float = field(
        default=0.0,
        metadata=_help(
            "Reward of a rollout whose output could not be parsed (it is still trained on, and counted)."
        ),
    )
    rollout_threads: int = field(default=32, metadata=_help("Concurrent program runs during rollouts."))
    max_staleness: int = field(
        default=0,
        metadata=_help(
            "Adapter versions a rollout may lag behind: a rollout whose trained calls were answered (the "
            "trace's model) by a version older than the current one minus this, or by any other model, is "
            "dropped and counted (stale_rollouts). 0: only the current version."
        ),
    )
    train_predictors: list[str] | None = field(
        default=None,
        metadata=_help(
            "Predictor names whose calls are trained and which are bound to the new adapter; empty: all (one shared "
            "adapter)."
        ),
    )
    # ---- advantages and loss
    scale_rewards: bool = field(
        default=True,
        metadata=_help(
            "Divide group-centred rewards by the group std (False: Dr. GRPO's mean-centring only)."
        ),
    )
    advantage_eps: float = field(default=1e-4, metadata=_help("Added to the group std before dividing."))
    loss_normalization: Literal["token", "sequence"] = field(
        default="token",
        metadata=_help(
            "token: mean over every completion token of the step; sequence: mean per completion, then over them."
        ),
    )
    epsilon: float = field(default=0.2, metadata=_help("Lower clip range of the ratio: 1 - epsilon."))
    epsilon_high: float | None = field(
        default=None, metadata=_help("Upper clip range: 1 + epsilon_high (default: epsilon).")
    )
    beta: float = field(
        default=0.04,
        metadata=_help(
            "Weight of the KL penalty to the reference: the starting policy (init_adapter when given, else the "
            "base model with LoRA disabled). 0 turns it off."
        ),
    )
    log_kl: bool = field(
        default=True,
        metadata=_help(
            "Compute and log the KL to the reference even when beta is 0 (one extra forward pass)."
        ),
    )
    num_iterations: int = field(
        default=1,
        metadata=_help(
            "Optimizer steps per rollout batch. Above 1, old log-probs are computed once before the first update "
            "and the ratio clipping takes effect."
        ),
    )
    # ---- optimisation
    learning_rate: float = field(
        default=1e-3,
        metadata=_help(
            "AdamW learning rate (the peak, see lr_scheduler_type). 1e-3 is the tiny model's measured "
            "from-base recipe; SmolLM2-135M: 5e-4 (measured); 1B-8B checkpoints: about 5e-5 (not measured)."
        ),
    )
    lr_scheduler_type: str = field(
        default="linear",
        metadata=_help(
            "How the learning rate moves over num_steps: 'linear' decays to 0 (TRL's GRPOConfig default), "
            "'cosine' decays on a half cosine, 'constant' keeps it. Computed from the step number, so a "
            "resumed run continues the same schedule."
        ),
    )
    warmup_ratio: float = field(
        default=0.0, metadata=_help("Fraction of num_steps over which the learning rate ramps up from 0.")
    )
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay."))
    adam_beta1: float = field(default=0.9, metadata=_help("AdamW beta1."))
    adam_beta2: float = field(default=0.99, metadata=_help("AdamW beta2."))
    max_grad_norm: float = field(default=1.0, metadata=_help("Gradient clipping norm; 0 turns clipping off."))
    micro_batch_size: int = field(
        default=64, metadata=_help("Completion rows per forward/backward pass (memory bound).")
    )
    micro_batch_tokens: int = field(
        default=16384,
        metadata=_help(
            "Padded tokens per forward/backward pass (distinct prompts count once, completions per row)."
        ),
    )
    lora: LoraSettings = field(
        default_factory=LoraSettings,
        metadata=_help(
            "Shape of a fresh LoRA adapter (ignored when starting from an adapter: its own config is kept)."
        ),
    )
    threads: int = field(
        default=0,
        metadata=_help(
            "torch CPU threads for the update. 0: OMP_NUM_THREADS when set, else half the CPUs (vLLM needs the rest)."
        ),
    )
    precision: Literal["auto", "fp32", "bf16"] = field(
        default="auto",
        metadata=_help(
            "The policy's weights and update. auto: the precision the server samples this model in here (bf16 "
            "on a GPU that supports it and on CPUs with native bf16, AVX512-BF16/AMX, for models of 30M+ "
            "parameters), else fp32. Log-probs and the loss are always computed in fp32."
        ),
    )
    device: str = field(
        default="auto",
        metadata=_help(
            "Where the policy trains: auto (the first visible CUDA GPU, else cpu), cpu, cuda or cuda:N. "
            "server.train_devices picks which GPUs are visible."
        ),
    )
    seed: int = field(default=0, metadata=_help("Seed for example order and torch."))
    # ---- validation, records
    val_every: int = field(
        default=15,
        metadata=_help(
            "Score the valset every N steps (and always at the start and the end); 0: only start and end."
        ),
    )
    val_threads: int = field(default=16, metadata=_help("Concurrent program runs during validation."))
    keep_loaded: int = field(
        default=1,
        metadata=_help(
            "Adapter versions of this run kept loaded in the server besides the best one; older ones are unloaded."
        ),
    )
    checkpoint_every: int = field(default=1, metadata=_help("Checkpoint every N steps (resume point)."))
    tensorboard: bool = field(default=True, metadata=_help("Also write TensorBoard event files."))

    def __post_init__(self) -> None:
        if self.num_rollouts_per_example < 2:
            raise ValueError(
                f"num_rollouts_per_example must be >= 2 (a group needs two members), "
                f"got {self.num_rollouts_per_example}"
            )
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 so that rollouts differ, got {self.temperature}")
        for name in (
            "num_steps",
            "examples_per_step",
            "num_iterations",
            "micro_batch_size",
            "micro_batch_tokens",
            "checkpoint_every",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.epsilon < 1.0:
            raise ValueError(f"epsilon must be in [0, 1), got {self.epsilon}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.lr_scheduler_type not in LR_SCHEDULES:
            raise ValueError(
                f"lr_scheduler_type must be one of {LR_SCHEDULES}, got {self.lr_scheduler_type!r}"
            )
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {self.max_staleness}")
        if self.dynamic_sampling_rounds < 0:
            raise ValueError(f"dynamic_sampling_rounds must be >= 0, got {self.dynamic_sampling_rounds}")
        if self.val_every < 0 or self.keep_loaded < 1:
            raise ValueError("val_every must be >= 0 and keep_loaded >= 1")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


def learning_rate_at(cfg: GRPOConfig, step: int) -> float:
    """The learning rate of (1-based) ``step`` under ``cfg``'s warmup and schedule."""
    import math

    total = max(1, cfg.num_steps)
    warmup = int(cfg.warmup_ratio * total)
    if step <= warmup:
        return cfg.learning_rate * step / (warmup + 1)
    progress = (step - 1 - warmup) / max(1, total - warmup)
    if cfg.lr_scheduler_type == "linear":
        return cfg.learning_rate * (1.0 - progress)
    if cfg.lr_scheduler_type == "cosine":
        return cfg.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.learning_rate
