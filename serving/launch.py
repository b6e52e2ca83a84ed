"""The one way a server is set up from the server schema, for every job, ``dspylite serve`` and ``doctor``.

    model_dir = server_model("smollm2-135m-instruct", config)     # named sources resolved (sources.models)
    with open_server(model_dir, config, log_dir="runs/x") as server:   # started here (or connected to
        lm = server.lm()                                                # config.api_base), stopped at the end

    server = build_server(model_dir, config, log_dir)   # not started: `dspylite serve` starts it itself

``vllm_server`` is the plain translation of the schema into ``VLLMServer`` arguments (what ``doctor``
checks); ``build_server`` adds the placement (devices, colocation, memory split: serving/placement.py),
and with ``server.replicas`` > 1 returns the replicas as one handle (``serving.replicas.LocalReplicas``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from dspylite.errors import ConfigError
from serving import server as vllm_process
from serving.config import ServerConfig
from serving.connection import VLLMConnection
from serving.devices import parse_devices, replica_devices
from serving.placement import plan_placement
from serving.replicas import LocalReplicas
from serving.server import VLLMServer, free_ports

logger = logging.getLogger(__name__)

API_KEY_ENV = "DSPYLITE_API_KEY"

Say = Callable[[str], None]


def _log(message: str) -> None:
    logger.info("%s", message)


def api_key(config: ServerConfig) -> str | None:
    """The server's bearer token: ``config.api_key``, else env DSPYLITE_API_KEY, else none."""
    return config.api_key or os.environ.get(API_KEY_ENV) or None


def server_model(model: str | None, config: ServerConfig, say: Say = _log) -> str:
    """The base model directory for ``model`` (a named source or a checkpoint directory; empty: the tiny
    model), resolved through ``sources.models``; '' with a remote server (``api_base``) and no model."""
    from sources.models import resolve_model

    if config.api_bases and not model:
        return ""
    return resolve_model(model, say)


def vllm_server(
    model_dir: str, config: ServerConfig, *, log_dir: str | Path | None = None, **placement: Any
) -> VLLMServer:
    """The (not started) ``VLLMServer`` the config describes; ``placement``: VLLMServer arguments that
    win over the config's (``plan_placement``'s sleep mode or computed memory split)."""
    arguments: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "served_model_name": config.served_model_name,
        "max_lora_rank": config.max_lora_rank,
        "max_loras": config.max_loras,
        "lora_modules": config.adapters,
        "api_key": api_key(config),
        "log_dir": log_dir,
        "extra_args": config.extra_args,
        "startup_timeout": config.startup_timeout,
        "devices": config.devices or None,
        "tensor_parallel_size": config.tensor_parallel_size,
        "data_parallel_size": config.data_parallel_size,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "dtype": None if config.dtype == "auto" else config.dtype,
    }
    return VLLMServer(model_dir, **{**arguments, **placement})


def build_server(
    model_dir: str, config: ServerConfig, log_dir: str | Path, say: Say = _log, *, trains: bool = True
) -> VLLMServer | LocalReplicas:
    """The server a job or ``dspylite serve`` starts: the config's server, placed (serving/placement.py;
    ``trains``: whether the job trains beside it, which decides ``server.colocate=auto``); with
    ``server.replicas`` > 1, that many, as one handle."""
    placement = plan_placement(model_dir, config, say, trains=trains)
    if config.replicas == 1:
        return vllm_server(model_dir, config, log_dir=log_dir, **placement)
    return LocalReplicas(replica_servers(model_dir, config, log_dir, **placement))


def replica_servers(
    model_dir: str, config: ServerConfig, log_dir: str | Path, **placement: Any
) -> list[VLLMServer]:
    """``config.replicas`` servers: ports ``server.port`` + i (or free ones), each its consecutive
    ``tensor_parallel_size`` GPUs of ``server.devices`` (all visible when empty), each logging to
    ``<log_dir>/replica-<i>/vllm.log``."""
    count = config.replicas
    ports = [config.port + i for i in range(count)] if config.port else free_ports(count, config.host)
    if max(ports) > 65535:
        raise ConfigError(f"server.port={config.port} + server.replicas={count} runs past port 65535")
    devices = replica_devices(parse_devices(config.devices or None, field="server.devices"), count)
    cores = (
        replica_cpu_cores(count, config.tensor_parallel_size)
        if vllm_process.vllm_flavor() == "cpu"
        else [None] * count
    )
    return [
        vllm_server(
            model_dir,
            replace(config, port=port, devices=",".join(map(str, share)) if share else ""),
            log_dir=Path(log_dir) / f"replica-{i}",
            **{"cpu_cores": own_cores, **placement},
        )
        for i, (port, share, own_cores) in enumerate(zip(ports, devices, cores, strict=True))
    ]


def replica_cpu_cores(count: int, tensor_parallel_size: int = 1) -> list[list[int] | None]:
    """Each CPU replica's own consecutive share of this process's cores, so their OpenMP threads do not
    spin against each other (vLLM's automatic binding would put every replica on the same cores); with
    too few cores for one per rank, vLLM's automatic binding for all."""
    cores = vllm_process.usable_cores()
    if len(cores) < count * tensor_parallel_size:
        logger.warning(
            "%d CPU replicas x %d ranks on %d cores: they share cores (vLLM's automatic binding)",
            count,
            tensor_parallel_size,
            len(cores),
        )
        return [None] * count
    size = len(cores) // count
    return [cores[i * size : (i + 1) * size] for i in range(count)]


@contextlib.contextmanager
def open_server(
    model_dir: str, config: ServerConfig, log_dir: str | Path, say: Say = _log, *, trains: bool = True
) -> Iterator[VLLMConnection]:
    """``connect`` to ``config.api_base`` (loading ``config.adapters`` it lacks), or a server started here
    (``build_server``, placed for a job that trains beside it unless ``trains`` is False) and stopped when
    the block ends."""
    if config.api_bases:
        from serving.connection import connect

        say(f"using the server(s) at {', '.join(config.api_bases)}")
        connection = connect(config.api_bases, api_key=api_key(config), max_lora_rank=config.max_lora_rank)
        served = set(connection.served_models())
        for name, path in config.adapters.items():
            if name not in served:
                connection.load_adapter(name, path)
        yield connection
        return
    server = build_server(model_dir, config, log_dir, say, trains=trains)
    what = "vLLM" if config.replicas == 1 else f"{config.replicas} vLLM replicas"
    log = server.log_path if config.replicas == 1 else Path(log_dir) / "replica-*" / "vllm.log"
    say(f"starting {what} on {server.model} (log: {log}) ...")
    server.start()
    say(
        f"{what} ready in {server.start_seconds or 0:.0f}s at {', '.join(server.api_bases)} "
        f"(serving in {server.dtype})"
    )
    try:
        yield server
    finally:
        server.stop()
