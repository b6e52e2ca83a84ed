"""Where a job's server and training run, and how they share a GPU, from the server schema.

    args = plan_placement(model_dir, config)         # VLLMServer keyword arguments (sleep mode, or a
    server = VLLMServer(model_dir, ..., **args)      # --gpu-memory-utilization that leaves training room)
    shared = colocation(server, config)              # what trainers wrap their training phases in

One computation (``placement``) decides the device plan and the colocation mode for both the
server's start-up flags and the trainers' ``Colocation`` (serving/colocate.py), so they never disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from serving.colocate import Colocation, effective_mode, server_args, sleep_mode_available
from serving.config import ServerConfig
from serving.devices import DevicePlan, plan_devices, use_training_devices
from serving.memory import (
    TRAINING_BATCH_SIZE,
    TRAINING_SEQ_LEN,
    MemorySplit,
    ModelShape,
    memory_split,
    serving_memory,
    training_memory,
)

logger = logging.getLogger(__name__)

Say = Callable[[str], None]


def _log(message: str) -> None:
    logger.info("%s", message)


def placement(config: ServerConfig, *, trains: bool = True) -> tuple[DevicePlan, str]:
    """The checked device plan and the colocation mode that applies here (``sleep``, ``split`` or
    ``off``; serving.colocate.effective_mode). ``trains``: whether the job trains beside the server
    (eval, optimize and ``dspylite serve`` do not, so ``auto`` leaves vLLM alone for them)."""
    from serving.server import vllm_flavor, vllm_version

    plan = plan_devices(
        config.devices or None,
        config.train_devices or None,
        tensor_parallel_size=config.tensor_parallel_size,
        data_parallel_size=config.data_parallel_size,
        replicas=config.replicas,
    )
    flavor = vllm_flavor()
    mode = effective_mode(
        config.colocate,
        flavor=flavor,
        shared=plan.shared,
        trains=trains,
        sleep_available=sleep_mode_available(flavor, vllm_version()),
        memory_set=config.gpu_memory_utilization is not None,
    )
    return plan, mode


def plan_placement(
    model_dir: str, config: ServerConfig, say: Say = _log, *, trains: bool = True
) -> dict[str, Any]:
    """The VLLMServer arguments for ``config.colocate`` (sleep mode, or a computed memory split), after
    checking the device lists. Training processes started by this process see ``config.train_devices``."""
    plan, mode = placement(config, trains=trains)
    if plan.train is not None:
        use_training_devices(plan.train)
    chosen = f"server.colocate={config.colocate}" + (f" -> {mode}" if config.colocate == "auto" else "")
    split = None
    if mode == "split" and config.gpu_memory_utilization is None:
        split = training_memory_split(model_dir, config)
        say(f"{chosen}: {split.describe()}")
    elif mode == "split":
        say(f"{chosen}: vLLM takes server.gpu_memory_utilization={config.gpu_memory_utilization} of the GPU")
    elif mode == "sleep":
        say(f"{chosen}: vLLM and training share a GPU; vLLM sleeps (level 1) around each training phase")
    # A hand-set gpu_memory_utilization is the split itself.
    args = server_args(mode, split) if mode != "split" or split is not None else {}
    if config.gpu_memory_utilization is not None:
        args["gpu_memory_utilization"] = config.gpu_memory_utilization
    return args


def training_memory_split(model_dir: str, config: ServerConfig) -> MemorySplit:
    """vLLM's share of GPU 0 when a LoRA of the server's largest rank trains beside it on
    ``TRAINING_BATCH_SIZE x TRAINING_SEQ_LEN`` tokens (the size ``dspylite doctor`` checks too)."""
    import torch

    shape = ModelShape.from_dir(model_dir)
    total = torch.cuda.get_device_properties(0).total_memory
    training = training_memory(
        shape, lora_rank=config.max_lora_rank, batch_size=TRAINING_BATCH_SIZE, seq_len=TRAINING_SEQ_LEN
    )
    serving = serving_memory(shape, max_lora_rank=config.max_lora_rank, max_loras=config.max_loras)
    return memory_split(total, training, serving, min_kv_tokens=2048)


def colocation(server: Any, config: ServerConfig, say: Say = _log, *, trains: bool = True) -> Colocation:
    """The Colocation trainers wrap their training phases in (a no-op unless colocate=sleep applies)."""
    if config.api_base:
        return Colocation(server, "off", say=say)
    _, mode = placement(config, trains=trains)
    return Colocation(server, "sleep" if mode == "sleep" else "off", say=say)
