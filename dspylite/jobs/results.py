"""What a job writes about scored examples: the score record reports read, ``results.jsonl`` (one row
per example: what was asked, the gold labels, what the program said, and how it scored) and a
benchmark's ``data_card.json`` (where its rows came from)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dspylite.run_dir import RunDir

DATA_CARD_FILE = "data_card.json"


def score_record(result: Any) -> dict[str, Any]:
    """What reports need from an EvaluationResult: the summary plus the per-example scores (for paired CIs)."""
    return {**result.summary(), "scores": list(result.scores)}


def _fields(example: Any, part: str) -> dict[str, Any] | None:
    """The example's inputs or labels as a dict (``id`` left out: it has its own column)."""
    try:
        chosen = example.inputs() if part == "inputs" else example.labels()
    except ValueError:  # an Example without input keys: its fields cannot be told apart
        return None
    return {k: v for k, v in chosen.items() if k != "id"}


def write_results(run: RunDir, name: str, result: Any) -> Path:
    """One JSON line per example: id, score, error, the example's inputs and labels, the prediction."""
    from dspylite.evaluate import example_id
    from dspylite.utils.io import atomic_write_text

    lines = []
    for row in result.results:
        prediction = dict(row.prediction.items()) if row.prediction is not None else None
        lines.append(
            json.dumps(
                {
                    "id": example_id(row.example),
                    "score": row.score,
                    "error_kind": row.error_kind,
                    "error": row.error,
                    "inputs": _fields(row.example, "inputs"),
                    "labels": _fields(row.example, "labels"),
                    "prediction": prediction,
                },
                ensure_ascii=False,
                default=str,
            )
        )
    return atomic_write_text(run.path / name, "\n".join(lines) + ("\n" if lines else ""))


def write_data_card(run: RunDir, task: Any) -> Path | None:
    """The task's data card (a benchmark's source, checksums, counts, split rule) as ``data_card.json``;
    nothing for a task without one."""
    card = getattr(task, "data_card", None)
    return run.save_json(DATA_CARD_FILE, card) if card else None
