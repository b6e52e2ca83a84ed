"""The trainable policy: the base model with a PEFT LoRA adapter, its AdamW optimizer, and the update.

The update consumes ``rl.groups.Sample`` objects, i.e. the exact prompt and completion token ids the
server returned for each call (DESIGN.md, invariant 1): no chat template is applied and no text is
tokenised here. The reference for the KL term is the policy GRPO started from: from a fresh LoRA, the
same network with the adapter disabled (PEFT's ``disable_adapter()``, no extra memory); from an
``init_adapter`` (e.g. BootstrapFinetune's), a frozen second copy of that adapter, so the penalty
keeps the policy near what SFT learned instead of pulling it back to the untuned base model.

Optimizer state and RNG state are saved as safetensors plus JSON (never pickle), so a checkpoint
can be inspected and loaded without executing anything.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dspylite.errors import TrainingError
from rl.batching import make_batch, plan_micro_batches
from rl.config import GRPOConfig
from rl.loss import completion_logprobs, grpo_loss
from serving.adapter_files import METADATA_FILE
from serving.dtype import precision_record

logger = logging.getLogger(__name__)

OPTIMIZER_TENSORS = "optimizer.safetensors"
TRAINED_ADAPTER = "default"
REFERENCE_ADAPTER = "reference"
OPTIMIZER_META = "optimizer.json"
RNG_TENSORS = "rng.safetensors"


class Policy:
    """``Policy.load(model_path, cfg)``, then ``update(samples)`` and ``save_adapter(dir)`` each step."""

    def __init__(
        self,
        model: Any,
        *,
        model_path: str,
        cfg: GRPOConfig,
        pad_token_id: int,
        max_length: int,
        reference_adapter: str | None = None,
        serving_dtype: str | None = None,
    ):
        import torch

        self.model = model
        # The ranks of an ``accelerate launch`` job that train together (rl.distributed); None: one process.
        self.group: Any = None
        # The precision the server samples rollouts in (Backend.serving_dtype), for the adapters'
        # metadata; the policy trains in its own (old logprobs are recomputed here, not taken from the server).
        self.serving_dtype = serving_dtype
        self.train_dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        # None: the reference is the base model (adapter disabled); else a frozen adapter's name.
        self.reference_adapter = reference_adapter
        self.model_path = model_path
        self.cfg = cfg
        self.pad_token_id = pad_token_id
        self.max_length = max_length
        self.params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not self.params:
            raise TrainingError("the policy has no trainable (LoRA) parameters; check lora.target_modules")
        self.optimizer = torch.optim.AdamW(
            [p for _, p in self.params],
            lr=cfg.learning_rate,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            weight_decay=cfg.weight_decay,
        )

    # ---- construction ---------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        model_path: str,
        cfg: GRPOConfig,
        *,
        adapter_dir: str | None = None,
        serving_dtype: str | None = None,
    ) -> Policy:
        """The base model with a trainable LoRA (fresh from ``cfg.lora``, or ``adapter_dir``'s), placed on
        ``cfg.device`` in ``cfg.precision``. ``serving_dtype``: what the server samples in (vLLM's name),
        recorded in each saved adapter's metadata."""
        import torch
        from peft import LoraConfig, PeftModel, get_peft_model
        from transformers import AutoConfig, AutoModelForCausalLM

        from finetune.config import resolve_precision, resolve_threads
        from rl import distributed

        group = distributed.active()
        if group is None and distributed.launched_world_size() > 1:
            raise TrainingError(
                f"this is process {distributed.launched_rank()} of {distributed.launched_world_size()} "
                "(accelerate launch), but GRPO's process group is not set up: rank 0 calls "
                "rl.distributed.init_from_env(cfg) before training, the other ranks "
                "rl.distributed.run_worker(cfg) instead (`dspylite grpo` does both)"
            )
        if group is not None and group.is_main:  # the workers build the same policy (rl.distributed)
            arguments = {"adapter_dir": adapter_dir, "serving_dtype": serving_dtype}
            group.broadcast(("load", {"model_path": model_path, "cfg": cfg, **arguments}))
        torch.set_num_threads(resolve_threads(cfg.threads, share_with_server=True))
        torch.manual_seed(cfg.seed)
        model_path = str(Path(model_path).expanduser().resolve())
        if not Path(model_path, "config.json").is_file():
            raise TrainingError(f"model_path {model_path!r} is not a model directory (no config.json)")
        dtype = resolve_precision(cfg.precision, setting="grpo.precision", model_path=model_path)
        device = resolve_device(cfg.device)
        if group is not None and group.backend == "nccl":
            device = f"cuda:{group.local_rank}"  # one GPU per process
        logger.info("policy: %s on %s", dtype, device)
        base = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(device)
        reference: str | None = None
        if adapter_dir is not None:
            _check_adapter_base(adapter_dir, model_path)
            model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=True)
            if cfg.beta > 0 or cfg.log_kl:
                model.load_adapter(adapter_dir, adapter_name=REFERENCE_ADAPTER, is_trainable=False)
                model.set_adapter(TRAINED_ADAPTER)
                reference = REFERENCE_ADAPTER
        else:
            present = {name.rsplit(".", 1)[-1] for name, _ in base.named_modules()}
            targets = cfg.lora.target_modules
            missing = [t for t in targets if t != "all-linear" and t not in present]
            if missing:
                raise TrainingError(
                    f"lora.target_modules {missing} are not modules of {model_path}; "
                    f"it has e.g. {sorted(present)[:12]}"
                )
            lora = LoraConfig(
                r=cfg.lora.r,
                lora_alpha=cfg.lora.alpha,
                lora_dropout=cfg.lora.dropout,
                target_modules=targets if targets != ["all-linear"] else "all-linear",
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(base, lora)
        # Written into adapter_config.json: the server compares it with the model it runs.
        for peft_config in model.peft_config.values():
            peft_config.base_model_name_or_path = model_path
        model.train()
        config = AutoConfig.from_pretrained(model_path)
        pad = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
        if isinstance(pad, list):
            pad = pad[0]
        policy = cls(
            model,
            model_path=model_path,
            cfg=cfg,
            pad_token_id=int(pad or 0),
            max_length=int(getattr(config, "max_position_embeddings", 1 << 30)),
            reference_adapter=reference,
            serving_dtype=serving_dtype,
        )
        if group is not None:
            policy.group = group
            policy.copy_from_main()  # every rank is inside load here: the replicas start identical
        return policy

    # ---- the update ----------------------------------------------------------------------------------
    def update(
        self, samples: Sequence[Any], *, temperature: float, learning_rate: float | None = None
    ) -> dict[str, float]:
        """One GRPO update (``cfg.num_iterations`` optimizer steps) on the samples of one step.

        ``learning_rate`` (the schedule's value for this step) replaces ``cfg.learning_rate`` when given.
        Under ``accelerate launch`` (rank 0) the samples go to every rank first, and all train together.
        """
        if self.group is not None and self.group.is_main:
            from rl.distributed import wire_samples

            samples = wire_samples(samples)
            self.group.broadcast(("update", samples, temperature, learning_rate))
        return self.update_shard(samples, temperature=temperature, learning_rate=learning_rate)

    def update_shard(
        self, samples: Sequence[Any], *, temperature: float, learning_rate: float | None = None
    ) -> dict[str, float]:
        """``update`` on this process's share of ``samples`` (all of them in a single process); with
        several processes every rank calls it with the same samples and the gradients are summed."""
        import torch

        cfg = self.cfg
        lr = cfg.learning_rate if learning_rate is None else learning_rate
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        fitting = [
            s for s in samples if len(s.prompt_token_ids) + len(s.completion_token_ids) <= self.max_length
        ]
        stats: dict[str, float] = {"too_long_samples": float(len(samples) - len(fitting))}
        if len(fitting) < len(samples):
            logger.warning(
                "%d sample(s) exceed the model's %d positions and are left out",
                len(samples) - len(fitting),
                self.max_length,
            )
        if not fitting:
            return {
                **stats,
                "loss": float("nan"),
                "kl": float("nan"),
                "clip_fraction": 0.0,
                "grad_norm": 0.0,
                "train_tokens": 0.0,
                "optimizer_steps": 0.0,
            }
        group = self.group
        mine = fitting
        if group is not None:  # this rank's examples; the normaliser below stays the whole step's
            from rl.distributed import shard_indices

            mine = [fitting[i] for i in shard_indices(fitting, group.rank, group.world_size)]
        plan = plan_micro_batches(mine, cfg.micro_batch_tokens, cfg.micro_batch_size) if mine else []
        device = next(self.model.parameters()).device  # batches are built on CPU
        batches = [make_batch(mine, idx, pad_token_id=self.pad_token_id).to(device) for idx in plan]
        total_tokens = float(sum(len(s.completion_token_ids) for s in fitting))
        normalizer = total_tokens if cfg.loss_normalization == "token" else float(len(fitting))

        need_ref = cfg.beta > 0 or cfg.log_kl
        ref = (
            self._frozen_logprobs(batches, temperature, reference=True) if need_ref else [None] * len(batches)
        )
        # With one optimizer step the policy that sampled is the policy being updated, so the old
        # log-probs are the current ones, detached; more steps need them frozen before the first.
        old = self._frozen_logprobs(batches, temperature, reference=False) if cfg.num_iterations > 1 else None

        losses, kls, clipped, norms = [], [], [], []
        for iteration in range(cfg.num_iterations):
            self.optimizer.zero_grad(set_to_none=True)
            loss_sum = kl_sum = clip_sum = 0.0
            for i, batch in enumerate(batches):
                logps = completion_logprobs(self.model, batch, temperature=temperature)
                old_logps = old[i] if old is not None else logps.detach()
                out = grpo_loss(
                    logps,
                    old_logps,
                    batch.advantages,
                    batch.completion_mask,
                    ref_logps=ref[i],
                    beta=cfg.beta,
                    epsilon_low=cfg.epsilon,
                    epsilon_high=cfg.epsilon_high,
                    normalization=cfg.loss_normalization,
                    normalizer=normalizer,
                )
                out.loss.backward()
                loss_sum += float(out.loss.detach())
                kl_sum += out.kl
                clip_sum += out.clipped_tokens
            if group is not None:
                self._sum_gradients()
                loss_sum, kl_sum, clip_sum = self._sum_over_ranks(loss_sum, kl_sum, clip_sum)
            params = [p for _, p in self.params]
            if cfg.max_grad_norm > 0:
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            else:
                norm = torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
            self.optimizer.step()
            losses.append(loss_sum)
            kls.append(kl_sum / total_tokens if need_ref else float("nan"))
            clipped.append(clip_sum / total_tokens)
            norms.append(float(norm))
            logger.debug("iteration %d: loss %.4f kl %.4f", iteration, loss_sum, kls[-1])
        self.optimizer.zero_grad(set_to_none=True)
        return {
            **stats,
            "loss": losses[0],
            "kl": kls[0],
            "clip_fraction": max(clipped),
            "grad_norm": norms[0],
            "train_tokens": total_tokens,
            "train_samples": float(len(fitting)),
            "micro_batches": float(len(plan)) if group is None else self._sum_over_ranks(len(plan))[0],
            "optimizer_steps": float(cfg.num_iterations),
            "learning_rate": lr,
        }

    def _sum_gradients(self) -> None:
        """Sum every rank's LoRA gradients in place (one flat buffer: LoRA is small).

        Each rank's loss is already divided by the whole step's normaliser, so the sum is the
        single-process gradient; clipping and AdamW then run identically on every rank."""
        import torch

        params = [p for _, p in self.params]
        flat = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
        ).to(self.group.comm_device)
        self.group.sum_(flat)
        offset = 0
        for p in params:
            p.grad = flat[offset : offset + p.numel()].view_as(p).to(p.dtype)
            offset += p.numel()

    def _sum_over_ranks(self, *values: float) -> list[float]:
        """Per-rank statistics summed over the ranks."""
        import torch

        totals = torch.tensor(values, dtype=torch.float64, device=self.group.comm_device)
        return [float(v) for v in self.group.sum_(totals).tolist()]

    def copy_from_main(self) -> None:
        """Collective: every rank takes rank 0's LoRA weights and optimizer moments."""
        import torch
        import torch.distributed as dist

        group = self.group
        params = [p for _, p in self.params]
        flat = torch.cat([p.detach().reshape(-1).float() for p in params]).to(group.comm_device)
        dist.broadcast(flat, src=0)
        offset = 0
        with torch.no_grad():
            for p in params:
                p.copy_(flat[offset : offset + p.numel()].view_as(p).to(p.dtype))
                offset += p.numel()
        state = None
        if group.is_main:
            state = {
                index: {k: (v.detach().cpu() if torch.is_tensor(v) else v) for k, v in values.items()}
                for index, values in self.optimizer.state_dict()["state"].items()
            }
        state = group.broadcast(state)
        if not group.is_main:
            current = self.optimizer.state_dict()
            self.optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})

    def _sync_workers(self) -> None:
        """Rank 0, after loading weights or optimizer state from disk: the workers copy them."""
        if self.group is not None and self.group.is_main:
            self.group.broadcast(("sync",))
            self.copy_from_main()

    def _frozen_logprobs(self, batches: list[Any], temperature: float, *, reference: bool) -> list[Any]:
        import contextlib

        import torch

        results = []
        with torch.no_grad():
            context = self._reference_context() if reference else contextlib.nullcontext()
            with context:
                for batch in batches:
                    results.append(completion_logprobs(self.model, batch, temperature=temperature))
        return results

    def _reference_context(self) -> Any:
        import contextlib

        if self.reference_adapter is None:
            return self.model.disable_adapter()

        @contextlib.contextmanager
        def frozen_start() -> Any:
            self.model.set_adapter(self.reference_adapter, inference_mode=True)
            try:
                yield
            finally:
                # Makes the trained adapter active and trainable again (PEFT toggles requires_grad).
                self.model.set_adapter(TRAINED_ADAPTER)

        return frozen_start()

    # ---- saving ----------------------------------------------------------------------------------------
    def save_adapter(self, directory: str | os.PathLike[str]) -> Path:
        """Write the adapter (safetensors + adapter_config.json) atomically and durably (fsync, rename)."""
        from dspylite.utils.io import write_dir_atomically

        target = Path(directory)
        if target.exists():
            raise TrainingError(f"adapter directory {target} already exists; adapter versions are immutable")

        def write(tmp: Path) -> None:
            self.model.save_pretrained(str(tmp), safe_serialization=True, selected_adapters=[TRAINED_ADAPTER])
            metadata = {
                "trainer": "grpo",
                "base_model": self.model_path,
                "precision": precision_record(self.train_dtype, self.serving_dtype),
            }
            (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2), encoding="utf-8")

        return write_dir_atomically(target, write)

    def save_training_state(self, directory: Path) -> None:
        """Optimizer moments and torch's RNG state into ``directory`` (safetensors + JSON)."""
        import torch
        from safetensors.torch import save_file

        names = [n for n, _ in self.params]
        state = self.optimizer.state_dict()["state"]
        tensors: dict[str, Any] = {}
        for index, values in state.items():
            for key, value in values.items():
                tensor = value if torch.is_tensor(value) else torch.tensor(float(value))
                tensors[f"{index}.{key}"] = tensor.detach().cpu().contiguous().clone()
        save_file(tensors, str(directory / OPTIMIZER_TENSORS))
        meta = {"param_names": names, "saved_at": time.time()}
        (directory / OPTIMIZER_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        rng = {"torch": torch.get_rng_state().contiguous()}
        device = next(self.model.parameters()).device
        if device.type == "cuda":  # LoRA dropout on a GPU draws from that device's generator
            rng["cuda"] = torch.cuda.get_rng_state(device).contiguous()
        save_file(rng, str(directory / RNG_TENSORS))

    def load_training_state(self, directory: Path) -> None:
        import torch
        from safetensors.torch import load_file

        meta = json.loads((directory / OPTIMIZER_META).read_text(encoding="utf-8"))
        names = [n for n, _ in self.params]
        if meta.get("param_names") != names:
            raise TrainingError(
                f"checkpoint {directory} holds optimizer state for other parameters "
                f"({len(meta.get('param_names', []))} vs {len(names)}); was the LoRA shape changed?"
            )
        tensors = load_file(str(directory / OPTIMIZER_TENSORS))
        state: dict[int, dict[str, Any]] = {}
        for key, tensor in tensors.items():
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = tensor
        current = self.optimizer.state_dict()
        self.optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})
        rng = load_file(str(directory / RNG_TENSORS))
        torch.set_rng_state(rng["torch"])
        device = next(self.model.parameters()).device
        if "cuda" in rng and device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], device)
        self._sync_workers()

    def load_adapter_weights(self, adapter_dir: str | os.PathLike[str]) -> None:
        """Copy the weights of a saved version (same LoRA shape) into the live adapter."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        weights = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
        result = set_peft_model_state_dict(self.model, weights)
        unexpected = getattr(result, "unexpected_keys", []) or []
        if unexpected:
            raise TrainingError(
                f"adapter {adapter_dir} does not match the policy's LoRA shape "
                f"(unexpected keys, e.g. {unexpected[:3]})"
            )
        self._sync_workers()


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a CUDA GPU is visible, else ``cpu``; an explicit GPU must exist."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainingError(
                f"grpo.device={device!r} but no CUDA GPU is visible; use grpo.device=cpu (or auto)"
            )
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise TrainingError(
                f"grpo.device={device!r} but only {torch.cuda.device_count()} CUDA GPU(s) are visible "
                "(server.train_devices sets which)"
            )
    return device


def _check_adapter_base(adapter_dir: str, model_path: str) -> None:
    from serving.adapter_files import check_base_model, read_adapter

    try:
        info = read_adapter(adapter_dir)
    except Exception as exc:
        raise TrainingError(f"init_adapter {adapter_dir!r} is not a usable LoRA adapter: {exc}") from exc
    try:
        check_base_model(info, model_path)
    except Exception as exc:
        raise TrainingError(f"init_adapter {adapter_dir!r}: {exc}") from exc
