"""Where a run's wall time goes: exclusive seconds per (stage, activity), for the demo's breakdown.

    with activity("training"):
        ...
    with activity("program runs", default=True):   # only when no other activity is open
        ...
    with stage("sft"):
        ...
    breakdown()  # {stage: {activity: seconds}}

A nested activity takes its time out of the enclosing one, so the figures of a stage add up to at most
its wall time (the rest is orchestration: saving, loading, bookkeeping). Only the main thread records:
the libraries open activities around whole phases (an evaluation, a training run, a rollout batch, a
server start), never inside ``parallel_map``'s worker threads, so nothing is counted twice. Costs two
``perf_counter`` calls per activity; nothing is recorded until something opens one.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

OTHER = "other"

_lock = threading.Lock()
_totals: dict[str, dict[str, float]] = {}
_stack: list[list[float | str]] = []  # [label, started, time taken by nested activities]
_stage = ""
_clock = time.perf_counter  # a module attribute so tests can drive it


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def activity(label: str, *, default: bool = False) -> Iterator[None]:
    """Count the time inside as ``label`` of the current stage (exclusive of nested activities).

    ``default``: only when no other activity is open (a generic label, e.g. "program runs", that a more
    specific enclosing one such as "evaluation" overrides).
    """
    if not _main_thread() or (default and _stack and _stack[-1][0] != OTHER):
        yield
        return
    frame: list[float | str] = [label, _clock(), 0.0]
    _stack.append(frame)
    try:
        yield
    finally:
        _stack.pop()
        elapsed = _clock() - float(frame[1])
        with _lock:
            stage_totals = _totals.setdefault(_stage, {})
            stage_totals[label] = stage_totals.get(label, 0.0) + elapsed - float(frame[2])
        if _stack:
            _stack[-1][2] = float(_stack[-1][2]) + elapsed


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Attribute the activities inside to stage ``name`` (and its wall time to ``other`` where none is open)."""
    global _stage
    if not _main_thread():
        yield
        return
    previous, _stage = _stage, name
    try:
        with activity(OTHER):
            yield
    finally:
        _stage = previous


def breakdown(earlier: dict[str, dict[str, float]] | None = None) -> dict[str, dict[str, float]]:
    """``{stage: {activity: seconds}}`` recorded so far in this process, added to ``earlier`` (what an
    interrupted run of the same job recorded before it was resumed: its time was spent too)."""
    with _lock:
        totals = {s: dict(acts) for s, acts in (earlier or {}).items()}
        for name, acts in _totals.items():
            into = totals.setdefault(name, {})
            for label, seconds in acts.items():
                into[label] = into.get(label, 0.0) + seconds
        return totals


# The column order of ``table_rows``: waiting, serving-bound, training, syncing, the rest.
ACTIVITIES = ("server start", "program runs", "evaluation", "rollouts", "training", "adapter sync", OTHER)


def table_rows(totals: dict[str, dict[str, float]], outside: str = "setup") -> list[dict[str, str]]:
    """Rows of minutes per stage (``outside`` names the time outside every stage) and activity, a total
    row, and each activity's share of the total."""
    columns = [a for a in ACTIVITIES if any(a in acts for acts in totals.values())]
    columns += sorted({a for acts in totals.values() for a in acts} - set(columns))
    rows = []
    sums = dict.fromkeys(columns, 0.0)
    for name, acts in totals.items():
        row = {"stage": name or outside}
        for column in columns:
            row[column] = f"{acts.get(column, 0.0) / 60:.1f}"
            sums[column] += acts.get(column, 0.0)
        row["total"] = f"{sum(acts.values()) / 60:.1f}"
        rows.append(row)
    grand = sum(sums.values()) or 1.0
    rows.append(
        {"stage": "total", **{c: f"{v / 60:.1f}" for c, v in sums.items()}, "total": f"{grand / 60:.1f}"}
    )
    rows.append({"stage": "share", **{c: f"{v / grand:.0%}" for c, v in sums.items()}, "total": "100%"})
    return rows


def reset() -> None:
    with _lock:
        _totals.clear()
