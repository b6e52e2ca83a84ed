"""``Parallel``: run many ``(module, example)`` pairs on a thread pool, as ``dspy.Parallel``.

Results keep the input order; a pair that raises gives ``None`` in its slot (logged), and more than
``max_errors`` failures stop the run with ``ParallelError``. Each worker thread runs in a copy of the
caller's context, so ``dspylite.context(...)`` settings apply inside.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from dspylite.errors import ParallelError
from dspylite.example import Example

logger = logging.getLogger(__name__)


class Parallel:
    def __init__(
        self,
        num_threads: int | None = None,
        max_errors: int | None = None,
        access_examples: bool = True,
        return_failed_examples: bool = False,
        provide_traceback: bool | None = None,
        disable_progress_bar: bool = False,
        timeout: int = 120,
        straggler_limit: int = 3,
    ):
        self.num_threads = num_threads
        self.max_errors = max_errors
        self.access_examples = access_examples
        self.return_failed_examples = return_failed_examples
        self.provide_traceback = provide_traceback
        self.disable_progress_bar = disable_progress_bar
        # An example still running after `timeout` seconds, once at most `straggler_limit` are left,
        # is started once more (the first run to finish counts); 0 turns this off.
        self.timeout = timeout
        self.straggler_limit = straggler_limit
        self.error_count = 0

    def __call__(self, exec_pairs: list[tuple[Any, Any]], num_threads: int | None = None) -> Any:
        return self.forward(exec_pairs, num_threads)

    def forward(self, exec_pairs: list[tuple[Any, Any]], num_threads: int | None = None) -> Any:
        from dspylite import settings
        from dspylite.utils.parallel import parallel_map

        state = settings.current()
        threads = num_threads or self.num_threads or state.num_threads
        max_errors = self.max_errors if self.max_errors is not None else state.max_errors
        show_traceback = (
            self.provide_traceback if self.provide_traceback is not None else state.provide_traceback
        )
        pairs = list(exec_pairs)
        bar = None
        if not self.disable_progress_bar and len(pairs) > 1:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(pairs), desc="Parallel", leave=False)
        try:
            outcomes = parallel_map(
                self._run_pair,
                pairs,
                num_threads=threads,
                progress=bar,
                timeout=self.timeout,
                straggler_limit=self.straggler_limit,
            )
        finally:
            if bar is not None:
                bar.close()
        results: list[Any] = []
        failed_examples: list[Any] = []
        exceptions: list[BaseException] = []
        for outcome, (_, example) in zip(outcomes, pairs, strict=True):
            results.append(outcome.value)
            if outcome.error is not None:
                failed_examples.append(example)
                exceptions.append(outcome.error)
                detail = (
                    "".join(traceback.format_exception(outcome.error))
                    if show_traceback
                    else f"{type(outcome.error).__name__}: {outcome.error}"
                )
                logger.error("Parallel: example #%d failed: %s", outcome.index, detail)
        self.error_count = len(exceptions)
        if self.error_count > max_errors:
            raise ParallelError(
                f"Parallel: {self.error_count} of {len(pairs)} examples failed, more than max_errors={max_errors}; "
                f"first error: {type(exceptions[0]).__name__}: {exceptions[0]}"
            ) from exceptions[0]
        if self.return_failed_examples:
            return results, failed_examples, exceptions
        return results

    def _run_pair(self, pair: tuple[Any, Any]) -> Any:
        from dspylite import settings
        from dspylite.example import Prediction
        from dspylite.utils.usage_tracker import track_usage

        state = settings.current()
        if not state.track_usage:
            return self._call(pair)
        # With track_usage on, each result carries its own usage (as in DSPy), and the enclosing
        # program's tracker still sees every token.
        outer = state.usage_tracker
        with track_usage() as tracker:
            result = self._call(pair)
        totals = tracker.get_total_tokens()
        if isinstance(result, Prediction) and result.get_lm_usage() is None:
            result.set_lm_usage(totals)
        if outer is not None:
            for model, usage in totals.items():
                outer.add_usage(model, usage)
        return result

    def _call(self, pair: tuple[Any, Any]) -> Any:
        module, example = pair
        if isinstance(example, Example):
            if self.access_examples:
                inputs = example.inputs() if example.input_keys is not None else example
                return module(**inputs.toDict())
            return module(example)
        if isinstance(example, dict):
            return module(**example)
        if isinstance(module, Parallel) and isinstance(example, list):
            return module(example)  # a nested Parallel takes its own list of pairs
        if isinstance(example, (list, tuple)):
            return module(*example)
        raise TypeError(
            f"Parallel: each pair's second item must be an Example, dict, list or tuple, got {type(example).__name__}"
        )


__all__ = ["Parallel"]
