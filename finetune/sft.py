"""LoRA SFT with TRL's SFTTrainer and a PEFT LoraConfig, loss on completion tokens only.

The trainer is TRL's with one change (``finetune.sft_loss``): the LM head projects completion positions
only, where TRL's CPU path projects every position of the padded batch.

``train_lora(data, cfg, run_dir)`` trains one adapter and writes it, with its metadata, to
``run_dir/adapters/<name>``: first into a temporary sibling directory, renamed only once complete,
so a killed or failed run never leaves a directory that looks like an adapter.

Checked before any training step runs:
- there are rows to train on;
- every LoRA target module exists in the model (the error lists the model's linear modules);
- the labels TRL built mask the prompt (-100) and keep the completion. TRL decides what the loss
  covers from the dataset's columns (a ``messages`` dataset trains on every token even with
  ``completion_only_loss``), so we look at the labels themselves rather than trust the flags.

Checkpoints go to ``run_dir/checkpoints/<key>``, where the key hashes the data and the training
config: re-running the same job after a kill resumes from its last complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspylite.activity import activity
from dspylite.config_io import to_dict
from dspylite.errors import TrainingError
from dspylite.run_dir import RunDir
from dspylite.utils.io import write_dir_atomically
from finetune.config import (
    FinetuneConfig,
    LoraSettings,
    load_finetune_config,
    resolve_precision,
    resolve_threads,
)
from finetune.data import SFTData
from finetune.sft_tokens import tokenize_dataset
from serving.adapter_files import METADATA_FILE
from serving.dtype import precision_record

logger = logging.getLogger(__name__)

__all__ = [
    "AdapterResult",
    "FinetuneConfig",
    "LoraSettings",
    "load_finetune_config",
    "train_lora",
    "linear_module_names",
    "build_sft_trainer",
    "TrainerSetup",
    "check_target_modules",
    "latest_checkpoint",
    "METADATA_FILE",
]

# Config fields that do not change what is trained (so they stay out of the checkpoint key).
_NOT_IN_KEY = {
    "resume",
    "logging_steps",
    "eval_steps",
    "save_steps",
    "save_total_limit",
    "tensorboard",
    "threads",
}


@dataclass
class AdapterResult:
    """A trained adapter on disk."""

    name: str
    path: str
    base_model: str
    data_hash: str
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    resumed_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def train_lora(
    data: SFTData | Any,
    cfg: FinetuneConfig | str | Path | dict[str, Any] | None = None,
    run_dir: RunDir | str | Path | None = None,
    *,
    adapter_name: str | None = None,
    model_path: str | Path | None = None,
    extra_metadata: dict[str, Any] | None = None,
    callbacks: list[Any] | None = None,
    serving_dtype: str | None = None,
) -> AdapterResult:
    """Train a LoRA adapter on ``data`` and save it under ``run_dir/adapters/<adapter_name>``.

    ``data``: an ``SFTData`` (from ``finetune.data.build_sft_data``) or a ``datasets`` Dataset /
    DatasetDict (``train`` and optional ``val``) of prompt/completion rows. ``model_path``: the base
    model (a directory or a named source). ``adapter_name`` defaults to ``sft-<n>`` (one above the
    highest in the adapters directory). ``callbacks``: extra transformers ``TrainerCallback`` objects.
    ``serving_dtype``: the precision the server samples in (``Backend.serving_dtype``), recorded next
    to the training precision in the adapter's metadata.
    """
    cfg = load_finetune_config(cfg)
    base = _base_model(model_path)
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir or "runs/sft")
    name = adapter_name or _next_adapter_name(run.adapters_dir, "sft")
    setup = build_sft_trainer(data, cfg, run, model_path=base, callbacks=callbacks)
    trainer, key, output_dir, data_hash = setup.trainer, setup.key, setup.output_dir, setup.data_hash
    logger.info(
        "SFT %s: %d train rows, %d val rows, %d threads, checkpoints in %s",
        name,
        len(trainer.train_dataset),
        setup.val_rows,
        setup.threads,
        output_dir,
    )

    resume = latest_checkpoint(output_dir) if cfg.resume else None
    if resume:
        logger.info("resuming from %s", resume)
    started = time.perf_counter()
    with activity("training"):
        with _disk_errors(output_dir):
            train_output = trainer.train(resume_from_checkpoint=resume)
        metrics = _collect_metrics(trainer, train_output, setup.val_rows, time.perf_counter() - started)
    accelerator = getattr(trainer, "accelerator", None)
    main_process = accelerator is None or accelerator.is_main_process
    if main_process:
        run.log_metrics(step=trainer.state.global_step, phase="sft_done", adapter=name, **metrics)

    metadata = {
        "name": name,
        "base_model": base,
        "data_hash": data_hash,
        "train_key": key,
        "config": to_dict(cfg),
        "metrics": metrics,
        "resumed_from": resume,
        "world_size": accelerator.num_processes if accelerator is not None else 1,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": _versions(),
        "precision": precision_record(train_dtype(cfg, base), serving_dtype),
        **(extra_metadata or {}),
    }
    path = _save_from_every_process(trainer, run.adapters_dir / name, metadata)
    return AdapterResult(
        name=name,
        path=str(path),
        base_model=base,
        data_hash=data_hash,
        metrics=metrics,
        config=to_dict(cfg),
        resumed_from=resume,
    )


@dataclass
class TrainerSetup:
    """A ready SFTTrainer plus what train_lora needs to know about it."""

    trainer: Any
    key: str  # checkpoint key: hash of data, config and base model
    output_dir: Path  # where checkpoints go
    data_hash: str
    val_rows: int
    threads: int


def build_sft_trainer(
    data: SFTData | Any,
    cfg: FinetuneConfig | str | Path | dict[str, Any] | None = None,
    run_dir: RunDir | str | Path | None = None,
    *,
    model_path: str | Path | None = None,
    callbacks: list[Any] | None = None,
) -> TrainerSetup:
    """Load the base model, check the LoRA targets, build TRL's SFTTrainer and verify its labels.

    ``train_lora`` calls this; tests call it to inspect the collated batches.
    """
    cfg = load_finetune_config(cfg)
    base = _base_model(model_path)
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir or "runs/sft")
    train_ds, val_ds, data_hash = _as_datasets(data)
    if len(train_ds) == 0:
        raise TrainingError("the SFT train split is empty: nothing to train on")
    threads = resolve_threads(cfg.threads)
    import torch

    torch.set_num_threads(threads)
    key = _train_key(cfg, data_hash, base)
    output_dir = run.checkpoints_dir / key
    tokenizer, model = _load_model(base, cfg)
    check_target_modules(model, cfg.lora.target_modules, base)
    # Token ids and loss mask built here (invariant 1), not by TRL's template rendering: see sft_tokens.
    train_ds = tokenize_dataset(train_ds, tokenizer)
    val_ds = tokenize_dataset(val_ds, tokenizer) if val_ds is not None and len(val_ds) > 0 else None
    trainer = _build_trainer(model, tokenizer, train_ds, val_ds, cfg, output_dir, run, callbacks or [])
    check_completion_only_labels(trainer.train_dataset)
    return TrainerSetup(
        trainer, key, output_dir, data_hash, len(val_ds) if val_ds is not None else 0, threads
    )


# ---- checks -------------------------------------------------------------------------------------------


def linear_module_names(model: Any) -> list[str]:
    """The distinct leaf names of the model's ``nn.Linear`` modules (what LoRA can target)."""
    import torch

    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name
    }
    return sorted(names)


def check_target_modules(model: Any, targets: list[str], model_ref: str = "the model") -> None:
    """Raise ``TrainingError`` naming each LoRA target module the model lacks."""
    if targets in (["all-linear"], "all-linear"):
        return
    available = linear_module_names(model)
    full_names = {name for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in available and t not in full_names]
    if missing:
        raise TrainingError(
            f"lora.target_modules {missing} not found in {model_ref}; its linear modules are {available}"
        )


def check_completion_only_labels(dataset: Any, sample: int = 16) -> None:
    """Fail unless the prepared rows' labels mask the prompt and keep part of the completion.

    Looks at the tokenized dataset TRL trains on: each sampled row must start with -100 labels
    (its prompt) and hold at least one trained label (its completion).
    """
    if "labels" not in dataset.column_names:
        raise TrainingError(
            "the prepared SFT dataset has no labels column, so the loss would cover every "
            "token; rows must be prompt/completion, not messages"
        )
    for i in range(min(sample, len(dataset))):
        labels = dataset[i]["labels"]
        trained = sum(1 for t in labels if t != -100)
        if not labels or labels[0] != -100 or trained == 0 or trained == len(labels):
            raise TrainingError(
                f"SFT row {i}: labels do not mask the prompt ({trained} of {len(labels)} tokens trained, first "
                f"label {labels[0] if labels else None}); the loss must cover completion tokens only"
            )


def latest_checkpoint(directory: str | Path) -> str | None:
    """The highest-step complete ``checkpoint-N`` in ``directory`` (trainer_state.json is written last)."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = []
    for child in directory.iterdir():
        if not (child.is_dir() and child.name.startswith("checkpoint-") and child.name[11:].isdigit()):
            continue
        try:
            json.loads((child / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("ignoring incomplete checkpoint %s", child)
            continue
        found.append((int(child.name[11:]), child))
    return str(max(found)[1]) if found else None


# ---- saving -------------------------------------------------------------------------------------------


def _save_from_every_process(trainer: Any, target: Path, metadata: dict[str, Any]) -> Path:
    """Save the adapter once, however many processes ``accelerate launch`` started.

    Under FSDP each process holds a shard of the LoRA weights, so every process takes part in gathering
    the full state dict; only the main process writes it, and the others wait until it is on disk.
    """
    accelerator = getattr(trainer, "accelerator", None)
    if accelerator is None or accelerator.num_processes == 1:
        return save_adapter_atomically(trainer.model, target, metadata)
    state_dict = accelerator.get_state_dict(trainer.model)
    if accelerator.is_main_process:
        save_adapter_atomically(
            accelerator.unwrap_model(trainer.model), target, metadata, state_dict=state_dict
        )
    accelerator.wait_for_everyone()
    return Path(target)


def save_adapter_atomically(
    model: Any, target: Path, metadata: dict[str, Any], *, state_dict: dict[str, Any] | None = None
) -> Path:
    """Write the adapter (safetensors) and its metadata into a temp dir, then rename it to ``target``.

    ``state_dict``: the full (gathered) weights when they are sharded across processes.
    """
    target = Path(target)
    if target.exists():
        raise TrainingError(
            f"adapter directory {target} already exists; adapter versions are immutable, "
            "train under a new name"
        )
    target.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp), safe_serialization=True, state_dict=state_dict)
        _fix_base_model_path(tmp, metadata["base_model"])
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str), encoding="utf-8")

    with _disk_errors(target.parent):
        write_dir_atomically(target, write)
    logger.info("adapter saved to %s", target)
    return target


def _fix_base_model_path(directory: Path, base_model: str) -> None:
    # vLLM and the registry compare adapter and server base models by path: record the resolved one.
    config_path = directory / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("base_model_name_or_path") != base_model:
        config["base_model_name_or_path"] = base_model
        config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")


class _disk_errors:
    """Turn a full disk (ENOSPC) into a TrainingError that names the directory."""

    def __init__(self, directory: Path):
        self.directory = directory

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None:
            return False
        full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
        # torch.save reports a failed write as RuntimeError("... file write failed"), safetensors its own way.
        full = full or "No space left on device" in str(exc) or "file write failed" in str(exc)
        if full:
            raise TrainingError(
                f"disk full while writing to {self.directory}: {exc}; free space there (or "
                "point run_dir elsewhere) and re-run to resume from the last checkpoint"
            ) from exc
        return False


# ---- internals ----------------------------------------------------------------------------------------


def _base_model(model_path: str | Path | None) -> str:
    """The base model reference to load: a directory (made absolute) or a name as given."""
    if not model_path or not str(model_path).strip():
        raise TrainingError("no base model: pass model_path= (the base model directory) to train on")
    path = Path(model_path).expanduser()
    return str(path.resolve()) if path.exists() else str(model_path)


def _as_datasets(data: Any) -> tuple[Any, Any, str]:
    if isinstance(data, SFTData):
        if not data.train:
            from finetune.data import require_rows

            require_rows(data)
        splits = data.to_datasets()
        return (
            _trainable(splits["train"]),
            _trainable(splits["val"]) if "val" in splits else None,
            data.data_hash,
        )
    from datasets import Dataset, DatasetDict

    if isinstance(data, DatasetDict):
        train = data["train"]
        val = data.get("val") or data.get("validation") or data.get("test")
    elif isinstance(data, Dataset):
        train, val = data, None
    else:
        raise TrainingError(
            f"train_lora needs SFTData or a datasets Dataset/DatasetDict, got {type(data).__name__}"
        )
    for column in ("prompt", "completion"):
        if column not in train.column_names:
            raise TrainingError(
                f"SFT dataset lacks the {column!r} column; rows must be prompt/completion "
                f"(got columns {train.column_names})"
            )
    digest = hashlib.sha256()
    for row in train.select_columns(["prompt", "completion"]):
        digest.update(json.dumps(row, sort_keys=True).encode())
    return _trainable(train), _trainable(val) if val is not None else None, digest.hexdigest()[:16]


def _trainable(dataset: Any) -> Any:
    """The columns tokenization reads (the rest, scores and names, must not reach the collator)."""
    wanted = ["prompt", "completion", "prompt_token_ids", "completion_token_ids"]
    return dataset.select_columns([c for c in wanted if c in dataset.column_names])


def _train_key(cfg: FinetuneConfig, data_hash: str, base: str) -> str:
    relevant = {k: v for k, v in to_dict(cfg).items() if k not in _NOT_IN_KEY}
    blob = json.dumps({"cfg": relevant, "data": data_hash, "base": base}, sort_keys=True, default=str)
    return f"sft-{data_hash[:8]}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


def _next_adapter_name(adapters_dir: Path, run: str) -> str:
    steps = []
    if adapters_dir.is_dir():
        for child in adapters_dir.iterdir():
            head, _, tail = child.name.rpartition("-")
            if head == run and tail.isdigit():
                steps.append(int(tail))
    return f"{run}-{max(steps, default=0) + 1}"


def epochs_for(cfg: FinetuneConfig, rows: int) -> float:
    """``num_train_epochs``, raised so that at least ``min_steps`` optimizer steps run (max_steps=-1 only)."""
    if cfg.max_steps > 0 or cfg.min_steps <= 0 or rows <= 0:
        return cfg.num_train_epochs
    steps_per_epoch = math.ceil(rows / (cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps))
    return max(cfg.num_train_epochs, math.ceil(cfg.min_steps / steps_per_epoch))


def _precision(cfg: FinetuneConfig, base: str | None) -> tuple[Any, bool, bool, bool]:
    """(torch dtype to load, bf16 flag, fp16 flag, use_cpu) for TRL's config, for base model ``base``."""
    import torch

    name = resolve_precision(cfg.precision, model_path=base)
    if name == "bfloat16":  # frozen base weights in bf16; PEFT keeps the LoRA weights in fp32
        return torch.bfloat16, True, False, not torch.cuda.is_available()
    if name == "float16":
        return torch.float32, False, True, False  # fp16 autocast with fp32 master weights
    return torch.float32, False, False, not torch.cuda.is_available()


def train_dtype(cfg: FinetuneConfig, base: str | None) -> str:
    """The precision the LoRA on ``base`` trains in under ``cfg`` on this machine (fp16 mixes into fp32
    weights)."""
    dtype, bf16, fp16, _ = _precision(cfg, base)
    return "bfloat16" if bf16 else "float16" if fp16 else str(dtype).removeprefix("torch.")


def _load_model(base: str, cfg: FinetuneConfig) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype, *_ = _precision(cfg, base)
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise TrainingError(f"cannot load base model {base!r} (model_path): {exc}") from exc
    if tokenizer.chat_template is None:
        raise TrainingError(f"the tokenizer of {base} has no chat template; SFT rows are chats and need one")
    model.config.use_cache = False
    return tokenizer, model


def _build_trainer(
    model: Any,
    tokenizer: Any,
    train_ds: Any,
    val_ds: Any,
    cfg: FinetuneConfig,
    output_dir: Path,
    run: RunDir,
    extra_callbacks: list[Any],
) -> Any:
    from peft import LoraConfig
    from trl import SFTConfig

    from finetune.sft_loss import completion_loss_trainer_class

    _, bf16, fp16, use_cpu = _precision(cfg, model.name_or_path)
    has_val = val_ds is not None and len(val_ds) > 0
    args = SFTConfig(
        output_dir=str(output_dir),
        # what is trained
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,  # transformers 5 reads a float below 1 as a ratio
        weight_decay=cfg.weight_decay,
        num_train_epochs=epochs_for(cfg, len(train_ds)),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_length=None if cfg.padding_free and not cfg.packing else cfg.max_length,
        seed=cfg.seed,
        data_seed=cfg.seed,
        completion_only_loss=True,
        assistant_only_loss=False,
        # how fast
        packing=cfg.packing,
        padding_free=cfg.padding_free,
        train_sampling_strategy="group_by_length" if cfg.group_by_length and not cfg.packing else "random",
        gradient_checkpointing=cfg.gradient_checkpointing,
        bf16=bf16,
        fp16=fp16,
        use_cpu=use_cpu,
        dataloader_num_workers=0,
        dataloader_pin_memory=not use_cpu,
        include_num_input_tokens_seen="non_padding",
        # records
        logging_steps=cfg.logging_steps,
        eval_strategy="steps" if has_val and cfg.eval_steps > 0 else "no",
        eval_steps=cfg.eval_steps if cfg.eval_steps > 0 else None,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        report_to="none",
        disable_tqdm=True,
    )
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules if cfg.lora.target_modules != ["all-linear"] else "all-linear",
        bias="none",
        task_type="CAUSAL_LM",
    )
    callbacks = [_metrics_callback(run), *extra_callbacks]
    if cfg.tensorboard:
        tensorboard = _tensorboard_callback(run.path / "tensorboard")
        if tensorboard is not None:
            callbacks.append(tensorboard)
    try:
        trainer = completion_loss_trainer_class()(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=val_ds if has_val else None,
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=callbacks,
        )
    except ValueError as exc:
        raise TrainingError(f"TRL refused the SFT setup: {exc}") from exc
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # it print()s every log; ours goes through logging and JSONL
    return trainer


def _tensorboard_callback(log_dir: Path) -> Any:
    if os.environ.get("RANK", "0") != "0":  # under torchrun/accelerate only the main process writes events
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback
    except ImportError:
        logger.warning("tensorboard is not installed; metrics go to metrics.jsonl only")
        return None
    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(log_dir)))


def _metrics_callback(run: RunDir) -> Any:
    """A TrainerCallback appending every Trainer log (loss, lr, grad norm, eval loss) to metrics.jsonl."""
    from transformers import TrainerCallback

    class MetricsToRunDir(TrainerCallback):
        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
        ) -> None:
            if logs and state.is_world_process_zero:  # one line per step, however many processes
                clean = {k: v for k, v in logs.items() if isinstance(v, (int, float, str))}
                run.log_metrics(step=state.global_step, phase="sft", **clean)
                logger.info("step %d: %s", state.global_step, clean)

    return MetricsToRunDir()


def _collect_metrics(trainer: Any, train_output: Any, val_rows: int, wall: float) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        k: v for k, v in (train_output.metrics or {}).items() if isinstance(v, (int, float))
    }
    metrics["global_step"] = trainer.state.global_step
    metrics["wall_seconds"] = round(wall, 2)
    tokens = trainer.state.num_input_tokens_seen or 0
    metrics["train_tokens"] = int(tokens)
    runtime = metrics.get("train_runtime") or wall
    metrics["train_tokens_per_second"] = round(tokens / runtime, 1) if runtime else 0.0
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    if losses:
        metrics["first_loss"], metrics["last_loss"] = losses[0], losses[-1]
    if val_rows:
        evaluated = trainer.evaluate()
        metrics.update({k: v for k, v in evaluated.items() if isinstance(v, (int, float))})
    return metrics


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("torch", "transformers", "trl", "peft"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            continue
    return out
