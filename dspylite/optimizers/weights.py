"""The one seam between weight optimizers and what sits above them (BetterTogether, the jobs).

    class WeightOptimizer(Protocol):
        server      # the serving handle adapters are loaded into
        registry    # the serving.registry.AdapterRegistry versions are registered in
        published   # adapter name -> directory of what the last compile published and bound
        def compile(self, student, *, trainset, valset=None): ...

BootstrapFinetune and GRPO implement it; callers read these attributes and nothing private.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class WeightOptimizer(Protocol):
    server: Any
    registry: Any
    published: dict[str, str]

    def compile(self, student: Any, *, trainset: Any, valset: Any = None) -> Any: ...
