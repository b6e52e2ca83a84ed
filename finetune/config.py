"""The typed SFT config: LoRA shape, optimisation, data filtering, checkpoints. Loaded from YAML.

    cfg = load_finetune_config("configs/sft.yaml", ["learning_rate=1e-3", "lora.r=8"])

Every field has help text (``dspylite.config_io.help_table(FinetuneConfig)`` prints them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from dspylite.config_io import field_help as _help
from dspylite.config_io import load_config, to_dict
from dspylite.errors import TrainingError

LLAMA_LINEAR_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraSettings:
    r: int = field(default=16, metadata=_help("LoRA rank; must not exceed the server's --max-lora-rank."))
    alpha: int = field(default=32, metadata=_help("LoRA alpha (the update is scaled by alpha / r)."))
    dropout: float = field(default=0.0, metadata=_help("Dropout on the LoRA input."))
    target_modules: list[str] = field(
        default_factory=lambda: list(LLAMA_LINEAR_MODULES),
        metadata=_help(
            "Names of the linear modules that get LoRA weights (checked against the model before "
            "training), or ['all-linear']."
        ),
    )


@dataclass
class FinetuneConfig:
    # The base model and the run directory are not settings: the caller decides them (the job's `model`
    # and `run_dir`, a Backend's model_dir and run_dir, train_lora's arguments). A YAML that still sets
    # them fails with these messages (dspylite.config_io) instead of being silently overridden.
    REMOVED_KEYS: ClassVar[dict[str, str]] = {
        "model_path": "the base model is the job's top-level `model` key (in Python: Backend(model_dir=...) "
        "or train_lora(model_path=...))",
        "run_dir": "the run directory is the job's top-level `run_dir` key (in Python: Backend(run_dir=...) "
        "or train_lora(data, cfg, run_dir))",
    }
    # ---- resume
    resume: bool = field(
        default=True,
        metadata=_help("Resume from the latest checkpoint of the same data in run_dir when one exists."),
    )
    # ---- LoRA
    lora: LoraSettings = field(default_factory=LoraSettings, metadata=_help("The LoRA adapter's shape."))
    # ---- optimisation
    learning_rate: float = field(default=2e-3, metadata=_help("AdamW peak learning rate."))
    lr_scheduler_type: str = field(default="cosine", metadata=_help("transformers scheduler name."))
    warmup_ratio: float = field(
        default=0.05, metadata=_help("Share of steps spent warming the learning rate up.")
    )
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay."))
    num_train_epochs: float = field(
        default=2.0, metadata=_help("Epochs over the train rows (max_steps wins).")
    )
    max_steps: int = field(
        default=-1, metadata=_help("Stop after this many optimizer steps; -1: use epochs.")
    )
    min_steps: int = field(
        default=100,
        metadata=_help(
            "With max_steps=-1: run more epochs when the rows are few, so training takes at least this many "
            "optimizer steps (a few hundred bootstrapped rows need more than 2 epochs); 0: off."
        ),
    )
    per_device_train_batch_size: int = field(default=16, metadata=_help("Rows per device per step."))
    gradient_accumulation_steps: int = field(default=1, metadata=_help("Micro-batches per optimizer step."))
    max_length: int = field(
        default=1024,
        metadata=_help(
            "Longest row in tokens (prompt + completion). Longer rows are left out and listed in the data card, "
            "never truncated."
        ),
    )
    seed: int = field(default=0, metadata=_help("Seed for the split, the shuffling and the LoRA init."))
    # ---- throughput
    padding_free: bool = field(
        default=False,
        metadata=_help(
            "Concatenate each batch into one row with no padding (TRL padding_free). Wins when rows differ a "
            "lot in length on a GPU with flash attention; on CPU the attention mask spans the whole batch."
        ),
    )
    packing: bool = field(
        default=False,
        metadata=_help("Pack rows into max_length sequences (TRL bfd packing; implies padding_free)."),
    )
    group_by_length: bool = field(
        default=True,
        metadata=_help("Batch rows of similar length together so little compute goes to padding."),
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata=_help("Trade compute for memory (TRL turns it on by default; small models do not need it)."),
    )
    threads: int = field(
        default=0,
        metadata=_help(
            "torch CPU threads. 0: OMP_NUM_THREADS when set, else every CPU this process may use (vLLM sits "
            "idle while the adapter trains). Set it lower when other work shares the cores: oversubscribed "
            "cores slow torch down many times over."
        ),
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(
        default="auto",
        metadata=_help(
            "auto: the precision the server samples this model in here: bf16 on a GPU that supports it and on "
            "CPUs with native bf16 (AVX512-BF16/AMX; models of 30M+ parameters), else fp32."
        ),
    )
    # ---- data
    metric_threshold: float = field(
        default=1.0, metadata=_help("A program run becomes training rows when its metric score is >= this.")
    )
    val_fraction: float = field(
        default=0.1,
        metadata=_help("Share of examples held out as validation rows (split by example, seeded)."),
    )
    dedupe: bool = field(default=True, metadata=_help("Drop rows whose prompt and completion repeat."))
    balance_field: str | None = field(
        default=None,
        metadata=_help(
            "An output field that is a class label (e.g. answer): cut the rows to the same count for each "
            "of its values (the rarest one's), by a seeded draw. For classifiers whose own passing runs are "
            "mostly one class; None: keep every passing row."
        ),
    )
    keep_truncated: bool = field(
        default=False,
        metadata=_help("Keep completions the server cut at max_tokens (finish_reason 'length')."),
    )
    # ---- logging, eval, checkpoints
    logging_steps: int = field(default=1, metadata=_help("Log loss and learning rate every N steps."))
    eval_steps: int = field(
        default=0, metadata=_help("Evaluate the val loss every N steps; 0: once, at the end of training.")
    )
    save_steps: int = field(default=50, metadata=_help("Checkpoint every N steps (for resume after a kill)."))
    save_total_limit: int = field(default=2, metadata=_help("Checkpoints kept on disk."))
    tensorboard: bool = field(default=True, metadata=_help("Also write TensorBoard event files."))

    def __post_init__(self) -> None:
        if self.lora.r <= 0:
            raise ValueError(f"lora.r must be positive, got {self.lora.r}")
        if not self.lora.target_modules:
            raise ValueError("lora.target_modules is empty; name at least one linear module")
        if self.max_length <= 0:
            raise ValueError(f"max_length must be positive, got {self.max_length}")
        if self.min_steps < 0:
            raise ValueError(f"min_steps must be >= 0, got {self.min_steps}")
        if self.max_steps == 0:
            raise ValueError("max_steps=0 trains nothing; use -1 for epochs or a positive count")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.per_device_train_batch_size <= 0 or self.gradient_accumulation_steps <= 0:
            raise ValueError("per_device_train_batch_size and gradient_accumulation_steps must be positive")


def resolve_threads(threads: int, *, share_with_server: bool = False) -> int:
    """The torch thread count for ``threads`` (0: automatic).

    Automatic: OMP_NUM_THREADS when set; else every CPU this process may use, or half of them when
    ``share_with_server`` (GRPO: vLLM works between updates, and oversubscribed cores slow torch
    down many times over).
    """
    if threads > 0:
        return threads
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    from serving.dtype import usable_cores

    cpus = len(usable_cores())
    return max(1, cpus // 2 if share_with_server else cpus)


def resolve_precision(
    choice: str, *, setting: str = "precision", model_path: str | Path | None = None
) -> str:
    """``auto`` | ``fp32`` | ``bf16`` | ``fp16`` -> the torch dtype name training runs in on this machine.

    auto: the precision the server would sample ``model_path`` in on this hardware
    (``serving.dtype.hardware_dtype``): bf16 on a CUDA GPU that supports it; on a CPU, bf16 where it is
    native (AVX512-BF16 or AMX) and the model large enough for it to pay, else fp32. Half precision
    the hardware lacks is refused, naming ``setting``: fp16 needs a GPU, bf16 a GPU or a CPU with
    native bf16 (elsewhere torch emulates it, several times slower than fp32).
    """
    import torch

    from serving.dtype import cpu_has_native_bf16, hardware_dtype

    cuda = torch.cuda.is_available()
    if choice == "auto":
        if cuda:
            choice = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        else:
            choice = "bf16" if hardware_dtype(model_path, device="cpu") == "bfloat16" else "fp32"
    names = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
    if choice not in names:
        raise TrainingError(f"{setting}={choice!r}: expected one of auto, {', '.join(names)}")
    if choice == "fp16" and not cuda:
        raise TrainingError(f"{setting}={choice!r} needs a GPU; on CPU use {setting}=fp32 (or auto)")
    if choice == "bf16" and not cuda and not cpu_has_native_bf16():
        raise TrainingError(
            f"{setting}={choice!r} needs a GPU or a CPU with native bf16 (avx512_bf16 or amx_bf16 in "
            f"/proc/cpuinfo), which this one lacks; use {setting}=fp32 (or auto)"
        )
    return names[choice]


def load_finetune_config(
    source: str | Path | dict[str, Any] | FinetuneConfig | None = None,
    overrides: list[str] | dict[str, Any] = (),
) -> FinetuneConfig:
    """A FinetuneConfig from the ``sft:`` section of a job YAML (configs/sft.yaml), a mapping of its
    fields, or an existing config, plus ``key=value`` overrides relative to those fields."""
    if isinstance(source, FinetuneConfig):
        if not overrides:
            return source
        source = to_dict(source)
    if isinstance(source, dict) or source is None:
        return load_config(FinetuneConfig, source, overrides)
    return load_config(FinetuneConfig, source, overrides, section="sft")
