"""Token usage per LM model inside a ``track_usage()`` block, as ``dspy.track_usage``.

LM clients report each answered request's usage here (cache hits cost nothing and report nothing);
``Prediction.get_lm_usage()`` gives the totals of the program call that produced it when
``configure(track_usage=True)`` is set.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any


class UsageTracker:
    """Sums usage dicts per model, nested keys included (``completion_tokens_details``...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.usage_data: dict[str, list[dict[str, Any]]] = {}

    def add_usage(self, lm: str, usage_entry: dict[str, Any]) -> None:
        with self._lock:
            self.usage_data.setdefault(lm, []).append(dict(usage_entry))

    def get_total_tokens(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {lm: _sum_entries(entries) for lm, entries in self.usage_data.items()}


def _sum_entries(entries: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for entry in entries:
        _add_into(total, entry)
    return total


def _add_into(total: dict[str, Any], entry: dict[str, Any]) -> None:
    for key, value in entry.items():
        if isinstance(value, dict):
            _add_into(total.setdefault(key, {}), value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            total[key] = (total.get(key) or 0) + value
        elif key not in total:
            total[key] = value


@contextlib.contextmanager
def track_usage() -> Iterator[UsageTracker]:
    """``with dspylite.track_usage() as tracker: ...; tracker.get_total_tokens()``."""
    from dspylite import settings

    tracker = UsageTracker()
    with settings.context(usage_tracker=tracker):
        yield tracker


def record_usage(model: str, usage: dict[str, Any] | None) -> None:
    """Report one answered request's usage to the active tracker, if any (called by LM clients)."""
    from dspylite import settings

    tracker = settings.current().usage_tracker
    if tracker is not None and usage is not None:
        tracker.add_usage(model, usage)


__all__ = ["UsageTracker", "record_usage", "track_usage"]
