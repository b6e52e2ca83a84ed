"""Fact topic: a single-module classification task (one sentence -> a ``Literal`` topic).

Small and easy on purpose: it exercises typed ``Literal`` outputs in tests and single-predictor
optimizers without needing the two-step Fact QA program.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Literal

from dspylite.datasets.normalize import normalize_answer
from dspylite.datasets.vocab import random_fact

if TYPE_CHECKING:
    from dspylite.example import Example

Topic = Literal["city", "colour", "age", "object", "job", "pets"]
TOPICS: tuple[str, ...] = ("city", "colour", "age", "object", "job", "pets")


def fact_topic_splits(
    seed: int = 0, n_train: int = 400, n_dev: int = 200, n_test: int = 200
) -> dict[str, list[dict[str, str]]]:
    """Disjoint train/dev/test lists of ``{"sentence", "topic"}`` dicts (distinct sentences)."""
    rng = random.Random(f"fact_topic:{seed}")
    seen: set[str] = set()
    rows: list[dict[str, str]] = []
    total = n_train + n_dev + n_test
    while len(rows) < total:
        fact = random_fact(rng)
        if fact.sentence in seen:
            continue
        seen.add(fact.sentence)
        rows.append({"sentence": fact.sentence, "topic": fact.relation.name})
    return {
        "train": rows[:n_train],
        "dev": rows[n_train : n_train + n_dev],
        "test": rows[n_train + n_dev :],
    }


def load_fact_topic(
    seed: int = 0, n_train: int = 400, n_dev: int = 200, n_test: int = 200
) -> dict[str, list[Example]]:
    """The Fact Topic splits as Examples with input ``sentence`` and label ``topic``."""
    from dspylite.example import Example

    splits = fact_topic_splits(seed=seed, n_train=n_train, n_dev=n_dev, n_test=n_test)
    return {name: [Example(**row).with_inputs("sentence") for row in rows] for name, rows in splits.items()}


def fact_topic_metric(example: object, prediction: object, trace: object = None) -> float:
    """1.0 when the predicted topic matches the gold one (case and spacing ignored)."""
    predicted = (
        prediction.get("topic") if isinstance(prediction, dict) else getattr(prediction, "topic", None)
    )
    gold = example.get("topic") if isinstance(example, dict) else getattr(example, "topic", None)
    if predicted is None:
        return 0.0
    return float(normalize_answer(str(predicted)) == normalize_answer(str(gold)))
