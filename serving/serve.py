"""The ``serve`` recipe: a typed config (the model, a run directory and the one server schema), and
running a server until interrupted.

    dspylite serve smollm2-135m-instruct server.port=8000 server.adapters.sft-1=runs/sft/adapters/sft-1

``configs/serve.yaml`` holds the same keys (``model``, ``run_dir``, and a ``server:`` section exactly like
every job's). The server is set up by ``serving.launch`` as a job's is: the model resolved through
``sources.models``, ``server.dtype=auto`` picked for the hardware. The CLI stays a thin parser.
"""

from __future__ import annotations

import copy
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspylite.config_io import field_help, from_dict, read_yaml_mapping, set_dotted, split_override
from dspylite.errors import ConfigError, ServingError
from serving.config import ServerConfig
from serving.launch import build_server, server_model
from serving.server import VLLMServer

logger = logging.getLogger(__name__)

# Top-level keys of serve configs written before the server schema moved under `server:`; each still
# works for now, with a warning naming its new key (null meant "unset", so a null value is dropped).
LEGACY_SERVER_KEYS = (
    "adapters",
    "host",
    "port",
    "served_model_name",
    "max_lora_rank",
    "max_loras",
    "api_key",
    "startup_timeout",
    "extra_args",
)


@dataclass
class ServeConfig:
    model: str = field(
        default="",
        metadata=field_help(
            "Base model: a checkpoint directory or a named source (tiny, smollm2-135m-instruct); required."
        ),
    )
    run_dir: str | None = field(
        default=None, metadata=field_help("Where vllm.log goes; null: runs/serve-<timestamp>.")
    )
    server: ServerConfig = field(
        default_factory=ServerConfig,
        metadata=field_help("The server: the same section (and keys) as every job config's `server:`."),
    )


def load_serve_config(
    path: str | Path | None = None,
    overrides: list[str] | dict[str, Any] = (),
    *,
    model: str | None = None,
    server_only: bool = False,
) -> ServeConfig:
    """``ServeConfig`` from a YAML file, ``key=value`` overrides and the command line's ``model``.

    Keys of the old flat layout (``port: 8000`` instead of ``server: {port: 8000}``) are moved under
    ``server`` with a warning naming the new key. ``server_only``: read just the file's ``model`` and
    ``server`` keys, so any job config works (``dspylite doctor --config configs/sft.yaml``)."""
    data = copy.deepcopy(read_yaml_mapping(path)) if path is not None else {}
    if server_only:
        data = {key: value for key, value in data.items() if key in ("model", "server", *LEGACY_SERVER_KEYS)}
    source = str(path) if path is not None else "command line"
    _move_legacy_keys(data, source)
    items = list(overrides.items()) if isinstance(overrides, dict) else [split_override(o) for o in overrides]
    for key, value in items:
        if key.split(".")[0] in LEGACY_SERVER_KEYS:
            _warn_legacy(key.split(".")[0], "command line")
            key = f"server.{key}"
        set_dotted(data, key, value)
    if model:
        data["model"] = model
    return from_dict(ServeConfig, data, source=source)


def _move_legacy_keys(data: dict[str, Any], source: str) -> None:
    server = data.get("server")
    if server is None:
        server = data["server"] = {}
    if not isinstance(server, dict):
        return  # from_dict names the bad section
    for key in LEGACY_SERVER_KEYS:
        if key not in data:
            continue
        value = data.pop(key)
        _warn_legacy(key, source)
        if key in server:
            raise ConfigError(f"{source}: {key} and server.{key} are both given; keep server.{key}")
        if value is not None:
            server[key] = value


def _warn_legacy(key: str, source: str) -> None:
    logger.warning("%s: serve key %r is now server.%s; please rename it", source, key, key)


def parse_adapter_specs(specs: list[str]) -> dict[str, str]:
    """``["sft-1=runs/x/adapters/sft-1", ...]`` -> ``{"sft-1": "runs/x/adapters/sft-1"}`` (the old
    ``--adapter NAME=PATH`` flag)."""
    adapters: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"--adapter expects NAME=PATH, got {spec!r}")
        if name in adapters:
            raise ConfigError(f"--adapter name {name!r} is given twice")
        adapters[name.strip()] = path.strip()
    return adapters


def prepare_server(config: ServeConfig, say: Callable[[str], None] | None = None) -> VLLMServer:
    """The (not yet started, but checked) server for the config: the model resolved, placed and
    sized by ``serving.launch`` like a job's; the run directory defaults to runs/serve-<time>."""
    if not config.model:
        raise ConfigError(
            "serve: 'model' is required: a checkpoint directory or a named source "
            "(e.g. `dspylite serve smollm2-135m-instruct`)"
        )
    if config.server.api_base:
        raise ConfigError(
            f"server.api_base={config.server.api_base!r}: `dspylite serve` starts a server; leave it empty "
            "(jobs use it to reach a server that is already running)"
        )
    if config.server.replicas != 1:
        raise ConfigError(
            f"server.replicas={config.server.replicas}: `dspylite serve` starts one server; for several, run "
            "it once per GPU set (each with its own server.port and server.devices) and list them all in a "
            "job's server.api_base, or let the job start them (server.replicas in the job's config)"
        )
    say = say or (lambda message: logger.info("%s", message))
    run_dir = Path(config.run_dir) if config.run_dir else Path("runs") / time.strftime("serve-%Y%m%d-%H%M%S")
    model_dir = server_model(config.model, config.server, say)
    # Nothing trains beside it here: server.colocate=auto leaves vLLM its default share of the GPU.
    server = build_server(model_dir, config.server, run_dir, say, trains=False)
    server.validate()
    return server


def serve_until_interrupted(
    server: VLLMServer, *, on_ready: Callable[[VLLMServer], None] | None = None, poll_seconds: float = 1.0
) -> None:
    """Start the server, call ``on_ready``, then block until Ctrl-C (or the server dies).

    The server is stopped on the way out in every case. Raises ``ServingError`` (with the log's
    tail) if the server exits on its own.
    """
    previous = _stop_on_signals()
    try:
        server.start()
        if on_ready is not None:
            on_ready(server)
        while server.is_running():
            _wait(poll_seconds)
        raise ServingError(
            f"the vLLM server exited unexpectedly; last lines of {server.log_path}:\n{server.log_tail()}"
        )
    except KeyboardInterrupt:
        logger.info("interrupted; stopping the server")
    finally:
        server.stop()
        _restore_signals(previous)


def _stop_on_signals() -> dict[int, Any]:
    """Turn SIGTERM (and SIGINT, even where a launcher set it to ignored) into KeyboardInterrupt.

    The server runs in its own session, so a terminal's Ctrl-C reaches only us; without this a plain
    ``kill`` of the CLI would end Python without running ``finally`` and orphan vLLM.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, _raise_interrupt)
    return previous


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _restore_signals(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _wait(seconds: float) -> None:
    # One seam for tests to simulate Ctrl-C without signalling the test process.
    time.sleep(seconds)
