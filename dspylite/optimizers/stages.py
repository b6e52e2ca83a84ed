"""One record per stage of a multi-stage run (BetterTogether's stages, the demo's stages).

Each stage returns a ``StageRecord``: where its program is saved, the adapters that program is bound
to (name -> directory, so a later stage or a resumed run re-serves them without searching the disk),
its per-example scores per split, and its wall time. ``stages.json`` holds a list of them, the one
schema every report reads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STAGES_FILE = "stages.json"


@dataclass
class StageRecord:
    name: str  # e.g. "baseline", "sft", or BetterTogether's "p -> w"
    program_path: str
    adapters: dict[str, str] = field(default_factory=dict)  # adapter name -> directory
    scores: dict[str, list[float]] = field(default_factory=dict)  # split -> per-example scores
    seconds: float = 0.0
    index: int = 0
    errors: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> failure kind -> count

    def mean(self, split: str) -> float:
        values = self.scores.get(split) or []
        return sum(values) / len(values) if values else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def load_stages(run_path: str | Path) -> list[StageRecord]:
    """The records in ``run_path/stages.json`` (an empty list when there is none yet)."""
    import json

    path = Path(run_path) / STAGES_FILE
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return []
    if not isinstance(rows, list):
        return []
    return [StageRecord.from_dict(r) for r in rows if isinstance(r, dict) and "name" in r]


def save_stages(run_path: str | Path, records: list[StageRecord]) -> Path:
    from dspylite.utils.io import atomic_write_json

    return atomic_write_json(Path(run_path) / STAGES_FILE, [r.to_dict() for r in records])
