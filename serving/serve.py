"""The ``serve`` recipe: a typed config, and running a server until interrupted.

The CLI (``dspylite serve``) and ``configs/serve.yaml`` both map onto ``ServeConfig``; the logic
lives here so the CLI stays a thin parser.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspylite.errors import ConfigError, ServingError
from serving.server import VLLMServer

logger = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    model: str = field(
        default="", metadata={"help": "Base model: a local checkpoint directory (or a hub id)."}
    )
    adapters: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "LoRA adapters served from the start, name -> adapter directory."},
    )
    host: str = field(
        default="127.0.0.1", metadata={"help": "Interface to bind; 0.0.0.0 exposes the server."}
    )
    port: int | None = field(default=None, metadata={"help": "TCP port; a free one when unset."})
    served_model_name: str | None = field(
        default=None,
        metadata={"help": "Name clients send as 'model' for the base model (default: its path)."},
    )
    max_lora_rank: int = field(default=16, metadata={"help": "Largest LoRA rank the server accepts."})
    max_loras: int = field(default=4, metadata={"help": "Adapters that can be active in one batch."})
    api_key: str | None = field(default=None, metadata={"help": "Require this bearer token on /v1 requests."})
    run_dir: str | None = field(
        default=None, metadata={"help": "Where vllm.log goes (default: runs/serve-<timestamp>)."}
    )
    startup_timeout: float = field(
        default=300.0, metadata={"help": "Seconds to wait for the server to be healthy."}
    )
    extra_args: list[str] = field(
        default_factory=list, metadata={"help": "Extra vLLM command-line flags, passed through unchanged."}
    )


def parse_adapter_specs(specs: list[str]) -> dict[str, str]:
    """``["sft-1=runs/x/adapters/sft-1", ...]`` -> ``{"sft-1": "runs/x/adapters/sft-1"}``."""
    adapters: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"--adapter expects NAME=PATH, got {spec!r}")
        if name in adapters:
            raise ConfigError(f"--adapter name {name!r} is given twice")
        adapters[name.strip()] = path.strip()
    return adapters


def build_server(config: ServeConfig) -> VLLMServer:
    """A (not yet started) server for the config; the run directory defaults to runs/serve-<time>."""
    if not config.model:
        raise ConfigError("serve: 'model' is required (a model directory or hub id)")
    run_dir = Path(config.run_dir) if config.run_dir else Path("runs") / time.strftime("serve-%Y%m%d-%H%M%S")
    return VLLMServer(
        config.model,
        port=config.port,
        host=config.host,
        served_model_name=config.served_model_name,
        max_lora_rank=config.max_lora_rank,
        max_loras=config.max_loras,
        lora_modules=config.adapters,
        api_key=config.api_key,
        log_dir=run_dir,
        extra_args=config.extra_args,
        startup_timeout=config.startup_timeout,
    )


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
