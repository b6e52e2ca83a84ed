"""Evaluate a program over a dev set: concurrent, with a progress bar, errors counted per example."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dspylite import settings as _settings
from dspylite.errors import AdapterParseError, LMError, MetricError
from dspylite.example import Example, Prediction
from dspylite.trace import TraceRecord, capture_traces
from dspylite.utils.parallel import parallel_map
from dspylite.utils.stats import mean_ci

logger = logging.getLogger(__name__)

Metric = Callable[..., Any]


@dataclass
class ExampleResult:
    example: Example
    prediction: Prediction | None
    score: float
    error: str | None = None  # "parse: ...", "lm: ...", "program: ...", "metric: ..."
    error_kind: str | None = None
    traces: list[TraceRecord] = field(default_factory=list)

    def __iter__(self):  # DSPy-style unpacking: example, prediction, score
        return iter((self.example, self.prediction, self.score))


@dataclass
class EvaluationResult:
    """``score`` is a percentage, as in DSPy. ``results`` has one row per example, in devset order."""

    score: float
    results: list[ExampleResult]
    error_counts: dict[str, int]

    @property
    def scores(self) -> list[float]:
        return [r.score for r in self.results]

    def interval(self, confidence: float = 0.95) -> tuple[float, float, float]:
        """Mean score in [0, 1] with its confidence interval."""
        return mean_ci(self.scores, confidence)

    @property
    def traces(self) -> list[TraceRecord]:
        return [t for r in self.results for t in r.traces]

    def table(self, limit: int = 20) -> str:
        lines = ["| # | score | error | prediction |", "|---|---|---|---|"]
        for i, r in enumerate(self.results[:limit]):
            pred = {k: v for k, v in r.prediction.items()} if r.prediction is not None else None
            lines.append(f"| {i} | {r.score:.2f} | {r.error_kind or ''} | {str(pred)[:80]} |")
        return "\n".join(lines)

    def __float__(self) -> float:
        return self.score

    def summary(self) -> dict[str, Any]:
        mean, lo, hi = self.interval()
        return {"score": self.score, "n": len(self.results), "mean": mean, "ci95": [lo, hi],
                "errors": dict(self.error_counts)}


def example_id(example: Example) -> str:
    """A stable id: the example's own ``id`` field, else a hash of its inputs."""
    if "id" in example:
        return str(example["id"])
    try:
        data = example.inputs().toDict() if example.input_keys is not None else example.toDict()
    except ValueError:
        data = example.toDict()
    blob = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_score(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if hasattr(value, "__float__") and not isinstance(value, str):
        return float(value)
    raise MetricError(f"metric returned {type(value).__name__} ({value!r}); it must return a number or bool")


def run_one(program: Any, example: Example, metric: Metric | None, *, keep_traces: bool = False,
            rollout_id: int | None = None) -> ExampleResult:
    """Run the program on one example and score it; every failure is caught and labelled."""
    eid = example_id(example)
    inputs = example.inputs().toDict() if example.input_keys is not None else example.toDict()
    with _settings.context(example_id=eid, rollout_id=rollout_id), capture_traces() as traces:
        try:
            prediction = program(**inputs)
        except AdapterParseError as exc:
            return ExampleResult(example, None, 0.0, f"parse: {exc}", "parse", list(traces))
        except LMError as exc:
            return ExampleResult(example, None, 0.0, f"lm: {exc}", "lm", list(traces))
        except Exception as exc:
            return ExampleResult(example, None, 0.0, f"program: {type(exc).__name__}: {exc}", "program", list(traces))
    if metric is None:
        return ExampleResult(example, prediction, 0.0, traces=list(traces))
    try:
        score = check_score(metric(example, prediction, None))
    except MetricError as exc:
        raise exc
    except Exception as exc:
        return ExampleResult(example, prediction, 0.0, f"metric: {type(exc).__name__}: {exc}", "metric",
                             list(traces) if keep_traces else [])
    return ExampleResult(example, prediction, score, traces=list(traces) if keep_traces else [])


class Evaluate:
    """``Evaluate(devset=..., metric=..., num_threads=8, display_progress=True)(program)``."""

    def __init__(self, *, devset: Sequence[Example], metric: Metric | None = None, num_threads: int = 8,
                 display_progress: bool = True, max_errors: int | None = None, return_traces: bool = False,
                 display_table: bool | int = False, failure_score: float = 0.0):
        self.devset = list(devset)
        self.metric = metric
        self.num_threads = num_threads
        self.display_progress = display_progress
        self.max_errors = max_errors
        self.return_traces = return_traces
        self.display_table = display_table
        self.failure_score = failure_score

    def __call__(self, program: Any, metric: Metric | None = None, devset: Sequence[Example] | None = None, *,
                 num_threads: int | None = None, display_progress: bool | None = None,
                 return_traces: bool | None = None) -> EvaluationResult:
        metric = metric or self.metric
        devset = list(devset) if devset is not None else self.devset
        if metric is None:
            raise MetricError("Evaluate needs a metric: Evaluate(devset=..., metric=fn)")
        keep = self.return_traces if return_traces is None else return_traces
        show = self.display_progress if display_progress is None else display_progress
        bar = _progress(len(devset), "Evaluate") if show else None
        try:
            outcomes = parallel_map(lambda ex: run_one(program, ex, metric, keep_traces=keep), devset,
                                    num_threads=num_threads or self.num_threads, progress=bar,
                                    max_errors=None)
        finally:
            if bar is not None:
                bar.close()
        results: list[ExampleResult] = []
        for outcome, example in zip(outcomes, devset, strict=True):
            if outcome.error is not None:
                if isinstance(outcome.error, MetricError):
                    raise outcome.error
                results.append(ExampleResult(example, None, self.failure_score,
                                             f"program: {outcome.error}", "program"))
            else:
                results.append(outcome.value)
        for r in results:
            if r.error is not None and r.score == 0.0:
                r.score = self.failure_score
        counts: dict[str, int] = {}
        for r in results:
            if r.error_kind:
                counts[r.error_kind] = counts.get(r.error_kind, 0) + 1
        failures = sum(counts.values())
        if self.max_errors is not None and failures > self.max_errors:
            raise RuntimeError(f"{failures} of {len(results)} examples failed (max_errors={self.max_errors}): {counts}")
        score = 100.0 * sum(r.score for r in results) / max(1, len(results))
        if failures:
            logger.warning("Evaluate: %d of %d examples failed: %s", failures, len(results), counts)
        logger.info("Evaluate: score %.2f on %d examples", score, len(results))
        return EvaluationResult(score=round(score, 2), results=results, error_counts=counts)


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)
