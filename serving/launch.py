"""The one way a server is set up from the server schema, for every job, ``dspylite serve`` and ``doctor``.

    model_dir = server_model("smollm2-135m-instruct", config)     # named sources resolved (sources.models)
    with open_server(model_dir, config, log_dir="runs/x") as server:   # started here (or connected to
        lm = server.lm()                                                # config.api_base), stopped at the end

    server = build_server(model_dir, config, log_dir)   # not started: `dspylite serve` starts it itself

``vllm_server`` is the plain translation of the schema into ``VLLMServer`` arguments (what ``doctor``
checks); ``build_server`` adds the placement (devices, colocation, memory split: serving/placement.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from serving.config import ServerConfig
from serving.connection import VLLMConnection
from serving.placement import plan_placement
from serving.server import VLLMServer

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

    if config.api_base and not model:
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
) -> VLLMServer:
    """The server a job or ``dspylite serve`` starts: the config's server, placed (serving/placement.py;
    ``trains``: whether the job trains beside it, which decides ``server.colocate=auto``)."""
    placement = plan_placement(model_dir, config, say, trains=trains)
    return vllm_server(model_dir, config, log_dir=log_dir, **placement)


@contextlib.contextmanager
def open_server(
    model_dir: str, config: ServerConfig, log_dir: str | Path, say: Say = _log, *, trains: bool = True
) -> Iterator[VLLMConnection]:
    """``connect`` to ``config.api_base`` (loading ``config.adapters`` it lacks), or a server started here
    (``build_server``, placed for a job that trains beside it unless ``trains`` is False) and stopped when
    the block ends."""
    if config.api_base:
        from serving.connection import connect

        say(f"using the server at {config.api_base}")
        connection = connect(config.api_base, api_key=api_key(config), max_lora_rank=config.max_lora_rank)
        served = set(connection.served_models())
        for name, path in config.adapters.items():
            if name not in served:
                connection.load_adapter(name, path)
        yield connection
        return
    server = build_server(model_dir, config, log_dir, say, trains=trains)
    say(f"starting vLLM on {server.model} (log: {Path(log_dir) / 'vllm.log'}) ...")
    server.start()
    say(f"vLLM ready in {server.start_seconds or 0:.0f}s at {server.api_base} (serving in {server.dtype})")
    try:
        yield server
    finally:
        server.stop()
