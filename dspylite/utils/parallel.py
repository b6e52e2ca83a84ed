"""Run a function over items on a thread pool, keeping each caller's dspylite context."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
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
    timeout: float | None = None,
    straggler_limit: int = 3,
) -> list[Outcome]:
    """Apply ``fn`` to every item; errors are captured per item, not raised.

    ``progress`` is any object with ``update(n)`` (a tqdm bar) or None. When more than ``max_errors``
    items fail, the remaining ones are cancelled and a RuntimeError names the count.

    Stragglers (DSPy's rule): once at most ``straggler_limit`` items are left, an item running longer
    than ``timeout`` seconds is started once more, and whichever run finishes first counts; a
    ``timeout`` of 0 or None never does this.

    The time counts as "program runs" (``dspylite.activity``) unless the caller opened a more
    specific activity.
    """
    with activity("program runs", default=True):
        return _parallel_map(
            fn,
            items,
            num_threads=num_threads,
            progress=progress,
            max_errors=max_errors,
            timeout=timeout,
            straggler_limit=straggler_limit,
        )


def _parallel_map(
    fn: Callable[[T], Any],
    items: Iterable[T],
    *,
    num_threads: int,
    progress: Any,
    max_errors: int | None,
    timeout: float | None,
    straggler_limit: int,
) -> list[Outcome]:
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        # A negative count used to mean "one thread" silently; say what is wrong instead.
        raise ConfigError(f"'num_threads' must be an integer >= 1, got {num_threads!r}")
    items = list(items)
    outcomes: list[Outcome] = [Outcome(i) for i in range(len(items))]
    errors = 0
    started: dict[int, float] = {}
    lock = threading.Lock()

    def run(i: int, item: T, ctx: contextvars.Context) -> Outcome:
        with lock:
            started.setdefault(i, time.monotonic())
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
    pool = ThreadPoolExecutor(max_workers=num_threads)
    futures = {pool.submit(run, i, item, contextvars.copy_context()): i for i, item in enumerate(items)}
    done_indices: set[int] = set()
    resubmitted: set[int] = set()
    try:
        while len(done_indices) < len(items):
            finished, _ = wait(list(futures), timeout=_poll_interval(timeout), return_when=FIRST_COMPLETED)
            for future in finished:
                index = futures.pop(future)
                if index in done_indices:
                    continue  # the other run of a resubmitted straggler finished first
                done_indices.add(index)
                outcome = future.result()
                outcomes[index] = outcome
                errors += outcome.error is not None
                if progress is not None:
                    progress.update(1)
                if max_errors is not None and errors > max_errors:
                    raise RuntimeError(_too_many(errors, max_errors, outcome.error))
            left = [i for i in set(futures.values()) if i not in done_indices]
            if timeout and len(left) <= straggler_limit:
                now = time.monotonic()
                for index in left:
                    if index not in resubmitted and now - started.get(index, now) > timeout:
                        logger.warning("item #%d has run for over %ss; starting it once more", index, timeout)
                        resubmitted.add(index)
                        futures[pool.submit(run, index, items[index], contextvars.copy_context())] = index
    except BaseException:
        for f in futures:
            f.cancel()
        raise
    finally:
        # Do not wait for straggler runs whose twin already finished.
        pool.shutdown(wait=not resubmitted, cancel_futures=True)
    return outcomes


def _poll_interval(timeout: float | None) -> float | None:
    return None if not timeout else max(0.05, min(1.0, timeout / 4))


def _too_many(errors: int, max_errors: int, last: BaseException | None) -> str:
    return f"{errors} examples failed (max_errors={max_errors}); last error: {type(last).__name__}: {last}"
