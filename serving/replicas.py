"""Several vLLM servers started here as one handle (``server.replicas``): the data-parallel layout that
keeps runtime LoRA loading correct.

vLLM's own ``--data-parallel-size`` runs replicas behind one API server, and ``/v1/load_lora_adapter``
reaches only one of them. Separate servers, each its own process on its own port (and its own GPUs),
each load every adapter version (``VLLMConnection.load_adapter``), and the LM client sends requests
round-robin over them:

    servers = [VLLMServer(model, port=p, devices=d) for p, d in ...]   # serving.launch builds these
    with LocalReplicas(servers) as replicas:
        replicas.load_adapter("grpo-1", path)      # on each, checked in each one's /v1/models
        lm = replicas.lm("grpo-1")                 # round-robin over them
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dspylite.errors import ServingError
from serving.connection import VLLMConnection
from serving.server import VLLMServer

logger = logging.getLogger(__name__)


class LocalReplicas(VLLMConnection):
    """``VLLMServer``s this process owns, on the same model: started together, stopped together."""

    def __init__(self, servers: list[VLLMServer]):
        if not servers:
            raise ServingError("LocalReplicas needs at least one VLLMServer")
        models = {server.model for server in servers}
        if len(models) > 1:
            raise ServingError(f"replicas must serve the same model, got {sorted(models)}")
        first = servers[0]
        super().__init__(
            [server.api_base for server in servers],
            api_key=first.api_key,
            max_lora_rank=first.max_lora_rank,
            base_model=first.model,
        )
        self.servers = list(servers)

    # -- what they serve ------------------------------------------------------------------------------
    @property
    def model(self) -> str:
        return self.servers[0].model

    @property
    def model_name(self) -> str:
        return self.servers[0].model_name

    @property
    def dtype(self) -> str:
        return self.servers[0].dtype

    @property
    def start_seconds(self) -> float | None:
        """How long the slowest replica took to become healthy."""
        times = [server.start_seconds for server in self.servers if server.start_seconds is not None]
        return max(times) if times else None

    @property
    def log_path(self) -> Path | None:
        return self.servers[0].log_path

    # -- lifecycle ------------------------------------------------------------------------------------
    def validate(self) -> None:
        for server in self.servers:
            server.validate()

    def start(self) -> LocalReplicas:
        """Launch every replica at once, then wait until each is healthy (all are stopped on a failure)."""
        try:
            for server in self.servers:
                server.start(wait=False)
            for server in self.servers:
                server.wait_healthy()
        except BaseException:
            self.stop()
            raise
        self.api_bases = [server.api_base for server in self.servers]
        self.loaded_adapters = dict(self.servers[0].loaded_adapters)
        logger.info("%d vLLM replicas healthy at %s", len(self.servers), ", ".join(self.api_bases))
        return self

    def is_running(self) -> bool:
        """Whether every replica's process is alive."""
        return all(server.is_running() for server in self.servers)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.loaded_adapters.clear()

    def __enter__(self) -> LocalReplicas:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
