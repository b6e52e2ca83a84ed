"""Run a function over items on a thread pool, keeping each caller's dspylite context."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, TypeVar

from dspylite.activity import activity
from dspylite.errors import ConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Outcome:
    index: int
    value: Any = None
    error: BaseException | None = None


def parallel_map(
    fn: Callable[[T], Any],
    items: Iterable[T],
    *,
    num_threads: int = 8,
    progress: Any = None,
    max_errors: int | None = None,
) -> list[Outcome]:
    """Apply ``fn`` to every item; errors are captured per item, not raised.

    ``progress`` is any object with ``update(n)`` (a tqdm bar) or None. When more than ``max_errors``
    items fail, the remaining ones are cancelled and a RuntimeError names the count. The time counts
    as "program runs" (``dspylite.activity``) unless the caller opened a more specific activity.
    """
    with activity("program runs", default=True):
        return _parallel_map(fn, items, num_threads=num_threads, progress=progress, max_errors=max_errors)


def _parallel_map(
    fn: Callable[[T], Any],
    items: Iterable[T],
    *,
    num_threads: int,
    progress: Any,
    max_errors: int | None,
) -> list[Outcome]:
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        # A negative count used to mean "one thread" silently; say what is wrong instead.
        raise ConfigError(f"'num_threads' must be an integer >= 1, got {num_threads!r}")
    items = list(items)
    outcomes: list[Outcome] = [Outcome(i) for i in range(len(items))]
    errors = 0

    def run(i: int, item: T, ctx: contextvars.Context) -> Outcome:
        try:
            return Outcome(i, ctx.run(fn, item))
        except Exception as exc:  # captured per item; the caller decides how to report it
            return Outcome(i, error=exc)

    if num_threads <= 1:
        for i, item in enumerate(items):
            outcomes[i] = run(i, item, contextvars.copy_context())
            errors += outcomes[i].error is not None
            if progress is not None:
                progress.update(1)
            if max_errors is not None and errors > max_errors:
                raise RuntimeError(_too_many(errors, max_errors, outcomes[i].error))
        return outcomes
    with ThreadPoolExecutor(max_workers=num_threads) as pool:
        futures = [pool.submit(run, i, item, contextvars.copy_context()) for i, item in enumerate(items)]
        try:
            for future in as_completed(futures):
                outcome = future.result()
                outcomes[outcome.index] = outcome
                errors += outcome.error is not None
                if progress is not None:
                    progress.update(1)
                if max_errors is not None and errors > max_errors:
                    raise RuntimeError(_too_many(errors, max_errors, outcome.error))
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return outcomes


def _too_many(errors: int, max_errors: int, last: BaseException | None) -> str:
    return f"{errors} examples failed (max_errors={max_errors}); last error: {type(last).__name__}: {last}"
