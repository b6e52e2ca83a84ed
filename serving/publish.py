"""Publishing an adapter version: a fresh immutable name, registered, loaded into the server.

Both trainers (BootstrapFinetune's SFT and GRPO) end a training phase the same way, so it is written
once here:

    name = fresh_version_name(registry, "sft-a1b2c3")          # sft-a1b2c3-1, -2, ...
    save_fn(run.adapters_dir / name)                              # the trainer writes the directory
    entry = publish_adapter(server, registry, name, path, base_model=model_dir, metadata={...})

Names are never reused (invariant 2: vLLM's prefix cache and the LM cache key on the name), and the
server loads each version by path.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from dspylite.activity import activity
from serving.registry import AdapterEntry, AdapterRegistry

logger = logging.getLogger(__name__)


def fresh_version_name(
    registry: AdapterRegistry, run_name: str, adapters_dir: str | os.PathLike | None = None
) -> str:
    """The registry's next ``<run_name>-<n>``, skipping names whose directory a killed run left behind."""
    name = registry.next_version_name(run_name)
    step = int(name.rsplit("-", 1)[1])
    directory = Path(adapters_dir) if adapters_dir is not None else Path(registry.root)
    while (directory / name).exists() or name in registry:
        step += 1
        name = f"{run_name}-{step}"
    return name


def publish_adapter(
    server: Any,
    registry: AdapterRegistry,
    name: str,
    path: str | os.PathLike,
    *,
    base_model: str | None = None,
    metrics: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> AdapterEntry:
    """Register the adapter directory ``path`` as ``name`` and load it into ``server`` (by path).

    ``server`` may be None (train now, serve later): the version is only registered.
    """
    with activity("adapter sync"):
        entry = registry.register(name, path, base_model=base_model, metrics=metrics, metadata=metadata)
        if server is not None:
            server.load_adapter(name, entry.path)
            logger.info("published adapter %s (%s)", name, entry.path)
    return entry
