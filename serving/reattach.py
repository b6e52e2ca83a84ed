"""Re-serving what a saved program is bound to, after a restart or in a new job.

A program records the adapter name each predictor uses (invariant 3); the directories come from the
caller (a stage record) or from the adapter registries next to a saved program file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dspylite.errors import ConfigError

logger = logging.getLogger(__name__)


def serve_bound_adapters(
    program: Any,
    server: Any,
    *,
    adapters: dict[str, str] | None = None,
    search_root: str | Path | None = None,
) -> list[str]:
    """Load the adapters ``program`` is bound to that ``server`` does not serve yet; returns their names.

    Each directory is taken from ``adapters`` (name -> directory) first, else from an adapter registry
    under ``search_root``. A bound adapter found in neither raises a ConfigError naming it.
    """
    from serving.binding import bindings

    served = set(server.served_models())
    wanted = sorted({m for m in bindings(program).values() if m and m not in served})
    loaded = []
    for name in wanted:
        path = (adapters or {}).get(name)
        if path is None and search_root is not None:
            path = find_registered_adapter(name, Path(search_root))
        if path is None:
            raise ConfigError(
                f"the program is bound to adapter {name!r}, which the server does not serve and no "
                f"registry under {search_root} lists; add it as server.adapters.{name}=<adapter dir>"
            )
        server.load_adapter(name, path)
        loaded.append(name)
    return loaded


def find_registered_adapter(name: str, root: Path) -> str | None:
    """The directory of adapter ``name`` in any adapter registry (registry.json) under ``root``."""
    from serving.registry import INDEX_FILE, AdapterRegistry

    for index in sorted(root.rglob(INDEX_FILE)):
        registry = AdapterRegistry(index.parent)
        if name in registry:
            return registry.get(name).path
    return None
