"""Which GPUs serve and which train: ``CUDA_VISIBLE_DEVICES`` for the server child and the trainers.

    plan = plan_devices(server="0", train="1")       # two GPUs: no sharing, colocation off
    VLLMServer(model, devices=plan.server, ...)
    subprocess.run(cmd, env=training_env(plan.train))

A device list is a comma-separated string of indices (``"0,1"``), a list of ints, or empty/None
(inherit the parent's visibility, i.e. everything). Settings are read once, before CUDA starts:
CUDA reads ``CUDA_VISIBLE_DEVICES`` at initialisation, so a process that already touched the GPU
cannot be moved (``use_training_devices`` refuses then).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dspylite.errors import ConfigError

logger = logging.getLogger(__name__)

CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
DeviceSpec = str | int | Sequence[int] | None


def parse_devices(spec: DeviceSpec, *, field: str = "devices") -> tuple[int, ...] | None:
    """``"0,1"`` / ``[0, 1]`` / ``0`` -> ``(0, 1)``; ``None``/``""``/``"all"`` -> None (inherit)."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all", "auto")):
        return None
    items: Sequence[object]
    if isinstance(spec, int):
        items = [spec]
    elif isinstance(spec, str):
        items = [part.strip() for part in spec.split(",")]
    else:
        items = list(spec)
    try:
        devices = tuple(int(str(item)) for item in items)
    except ValueError:
        raise ConfigError(
            f"{field}={spec!r}: give GPU indices separated by commas, e.g. {field}=0,1 (or empty for all)"
        ) from None
    if any(d < 0 for d in devices) or len(set(devices)) != len(devices):
        raise ConfigError(f"{field}={spec!r}: indices must be distinct and >= 0")
    return devices


def cuda_env(devices: DeviceSpec, *, field: str = "devices") -> dict[str, str]:
    """The environment entries that restrict a child process to ``devices`` (nothing to inherit)."""
    parsed = parse_devices(devices, field=field)
    return {} if parsed is None else {CUDA_VISIBLE_DEVICES: ",".join(map(str, parsed))}


def training_env(devices: DeviceSpec, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A full environment for a training process (e.g. ``accelerate launch``) on ``devices``."""
    env = dict(os.environ if base is None else base)
    env.update(cuda_env(devices, field="server.train_devices"))
    return env


def use_training_devices(devices: DeviceSpec) -> None:
    """Restrict this process's CUDA to ``devices`` (call before anything initialises CUDA)."""
    entries = cuda_env(devices, field="server.train_devices")
    if not entries:
        return
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise ConfigError(
            "server.train_devices cannot be applied: CUDA is already initialised in this process; "
            "set it before the first GPU use, or launch training as its own process with training_env()"
        )
    os.environ.update(entries)
    logger.info("training on CUDA devices %s", entries[CUDA_VISIBLE_DEVICES])


@dataclass(frozen=True)
class DevicePlan:
    server: tuple[int, ...] | None
    train: tuple[int, ...] | None

    @property
    def shared(self) -> bool:
        """Whether the server and training may land on the same GPU (so colocation matters)."""
        if self.server is None or self.train is None:
            return True
        return bool(set(self.server) & set(self.train))


def plan_devices(
    server: DeviceSpec = None,
    train: DeviceSpec = None,
    *,
    tensor_parallel_size: int = 1,
    data_parallel_size: int = 1,
    replicas: int = 1,
) -> DevicePlan:
    """Parse and check the device settings: the server(s) get ``replicas x tp x dp`` GPUs when they have
    a list."""
    plan = DevicePlan(
        parse_devices(server, field="server.devices"), parse_devices(train, field="server.train_devices")
    )
    check_parallel_sizes(plan.server, tensor_parallel_size, data_parallel_size, replicas)
    if plan.server is not None and plan.train is not None and plan.shared:
        logger.info(
            "server.devices %s and server.train_devices %s overlap on %s: server.colocate decides how they share",
            plan.server,
            plan.train,
            sorted(set(plan.server) & set(plan.train)),
        )
    return plan


def check_parallel_sizes(
    devices: tuple[int, ...] | None, tensor_parallel_size: int, data_parallel_size: int, replicas: int = 1
) -> None:
    if tensor_parallel_size < 1 or data_parallel_size < 1:
        raise ConfigError(
            f"server.tensor_parallel_size ({tensor_parallel_size}) and server.data_parallel_size "
            f"({data_parallel_size}) must be >= 1"
        )
    need = tensor_parallel_size * data_parallel_size * replicas
    if devices is not None and len(devices) != need:
        product = f"tensor_parallel_size x data_parallel_size = {tensor_parallel_size} x {data_parallel_size}"
        if replicas > 1:
            product = (
                f"replicas x tensor_parallel_size x data_parallel_size = {replicas} x {tensor_parallel_size} "
                f"x {data_parallel_size}"
            )
        raise ConfigError(
            f"server.devices {','.join(map(str, devices))} lists {len(devices)} GPU(s), but "
            f"{product} = {need}: list exactly {need} or change the parallel sizes"
        )


def replica_devices(devices: tuple[int, ...] | None, replicas: int) -> list[tuple[int, ...] | None]:
    """``devices`` cut into ``replicas`` equal consecutive shares (None: each replica inherits all)."""
    if devices is None:
        return [None] * replicas
    share = len(devices) // replicas
    return [devices[i * share : (i + 1) * share] for i in range(replicas)]
