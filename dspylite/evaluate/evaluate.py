"""Evaluate a program over a dev set: concurrent, with a progress bar, errors counted per example."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dspylite import settings as _settings
from dspylite.activity import activity
from dspylite.errors import (
    AdapterParseError,
    AllExamplesFailedError,
    BudgetExhausted,
    ConfigError,
    EvaluationError,
    LMError,
    LMUnavailableError,
    MetricError,
)
from dspylite.example import Example, Prediction
from dspylite.trace import TraceRecord, capture_traces
from dspylite.utils.callback import with_callbacks
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

    def __getitem__(self, index: int) -> Any:  # and indexing, as DSPy's (example, prediction, score) tuples
        return (self.example, self.prediction, self.score)[index]

    def __len__(self) -> int:
        return 3


@dataclass
class EvaluationResult:
    """``score`` is a percentage, as in DSPy. ``results`` has one row per example, in devset order:
    an ``ExampleResult`` that unpacks as DSPy's ``(example, prediction, score)``. ``error_counts``
    counts the failed examples by kind (``parse``, ``lm``, ``program``, ``metric``)."""

    score: float
    results: list[ExampleResult]
    error_counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.results = [r if isinstance(r, ExampleResult) else ExampleResult(*r) for r in self.results]

    def __repr__(self) -> str:
        return f"EvaluationResult(score={self.score}, results=<list of {len(self.results)} results>)"

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
        return {
            "score": self.score,
            "n": len(self.results),
            "mean": mean,
            "ci95": [lo, hi],
            "failed": sum(self.error_counts.values()),
            "errors": dict(self.error_counts),
        }


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


def run_one(
    program: Any,
    example: Example,
    metric: Metric | None,
    *,
    keep_traces: bool = False,
    rollout_id: int | None = None,
    pass_trace: bool = True,
    metric_trace: str | None = None,
) -> ExampleResult:
    """Run the program on one example and score it; every failure is caught and labelled. The one
    program runner: Evaluate, the prompt optimizers (``optimizers._eval.run_scored``), SFT teacher
    collection and GRPO rollouts all call it.

    How the metric is called: ``metric_trace="none"`` (or ``pass_trace=True``, the default) calls
    ``metric(example, prediction, None)`` as DSPy's optimizers do; ``"pair"`` (or ``pass_trace=False``)
    calls ``metric(example, prediction)`` as DSPy's ``Evaluate`` does, so a two-argument metric works;
    ``"traces"`` passes the run's TraceRecords as the third argument, as bootstrapping does.

    A run cut short by an optimizer's LM budget is labelled ``budget`` (its score means nothing).

    A metric that returns something other than a number raises ``MetricError`` (a bug in the metric,
    not a property of the example), and an open circuit breaker raises ``LMUnavailableError`` (the
    server is gone: no later example can succeed either). ``rollout_id=None`` keeps the caller's
    rollout id.
    """
    eid = example_id(example)
    inputs = example.inputs().toDict() if example.input_keys is not None else example.toDict()
    if rollout_id is None:
        rollout_id = _settings.current().rollout_id
    with _settings.context(example_id=eid, rollout_id=rollout_id), capture_traces() as traces:
        try:
            prediction = program(**inputs)
        except BudgetExhausted as exc:
            return ExampleResult(example, None, 0.0, f"budget: {exc}", "budget", _kept(traces, keep_traces))
        except AdapterParseError as exc:
            return ExampleResult(example, None, 0.0, f"parse: {exc}", "parse", _kept(traces, keep_traces))
        except LMUnavailableError:
            raise
        except LMError as exc:
            return ExampleResult(example, None, 0.0, f"lm: {exc}", "lm", _kept(traces, keep_traces))
        except Exception as exc:
            # A program that caught the budget's refusal and raised its own error was still cut short.
            kind = "budget" if _caused_by_budget(exc) else "program"
            return ExampleResult(
                example, None, 0.0, f"{kind}: {type(exc).__name__}: {exc}", kind, _kept(traces, keep_traces)
            )
    kept = _kept(traces, keep_traces)
    if metric is None:
        return ExampleResult(example, prediction, 0.0, traces=kept)
    try:
        style = metric_trace or ("none" if pass_trace else "pair")
        if style == "pair":
            value = metric(example, prediction)
        else:
            value = metric(example, prediction, list(traces) if style == "traces" else None)
    except Exception as exc:
        return ExampleResult(example, prediction, 0.0, f"metric: {type(exc).__name__}: {exc}", "metric", kept)
    return ExampleResult(example, prediction, check_score(value), traces=kept)


def _caused_by_budget(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, BudgetExhausted):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _kept(traces: list[TraceRecord], keep: bool) -> list[TraceRecord]:
    return list(traces) if keep else []


def _format_hint(counts: dict[str, int]) -> str:
    """What to try when no answer parsed: small models (SmolLM2-135M among them) often ignore the chat
    format's field markers but follow a JSON schema."""
    if set(counts) != {"parse"}:
        return ""
    adapter = _settings.current().adapter
    if adapter is None or type(adapter).__name__ == "ChatAdapter":
        return (
            "\nNo answer parsed: if the model ignores the chat format's [[ ## field ## ]] markers, "
            "try the JSON adapter (jobs: lm.adapter=json; Python: dspy.configure(adapter=dspy.JSONAdapter()))"
        )
    return ""


class Evaluate:
    """``Evaluate(devset=..., metric=..., num_threads=8, display_progress=True)(program)``.

    Per-example failures are labelled ``parse``, ``lm``, ``program`` or ``metric``, scored
    ``failure_score`` and counted in ``error_counts``. Past ``max_errors`` failures the run stops
    early with ``EvaluationError``; when every example failed there is no score and
    ``AllExamplesFailedError`` says how many failed of each kind. An LM whose server stopped
    answering (``LMUnavailableError``, its circuit breaker) stops the run at once and is re-raised.
    ``return_traces=True`` keeps every example's trace records.
    """

    def __init__(
        self,
        *,
        devset: Sequence[Example],
        metric: Metric | None = None,
        num_threads: int | None = None,
        display_progress: bool = True,
        display_table: bool | int = False,
        max_errors: int | None = None,
        provide_traceback: bool | None = None,
        failure_score: float = 0.0,
        save_as_csv: str | None = None,
        save_as_json: str | None = None,
        return_traces: bool = False,
        raise_if_all_failed: bool = True,
        **kwargs: Any,
    ):
        if "return_outputs" in kwargs:
            raise ConfigError(
                "Evaluate: `return_outputs` is no longer supported; the per-example results are always in "
                "the returned EvaluationResult's `results`"
            )
        if kwargs:
            raise TypeError(f"Evaluate got unexpected keyword argument(s) {sorted(kwargs)}")
        self.devset = list(devset)
        self.metric = metric
        # None: the configured num_threads (dspylite.configure(num_threads=...)) at call time.
        self.num_threads = None if num_threads is None else _check_threads(num_threads)
        self.provide_traceback = provide_traceback
        self.save_as_csv = save_as_csv
        self.save_as_json = save_as_json
        self.display_progress = display_progress
        self.max_errors = max_errors
        self.return_traces = return_traces
        self.display_table = display_table
        self.failure_score = failure_score
        # False for callers that want a score of failure_score even then (e.g. a baseline of a model
        # that never follows the format yet); the failures stay in error_counts either way.
        self.raise_if_all_failed = raise_if_all_failed

    @with_callbacks
    def __call__(
        self,
        program: Any,
        metric: Metric | None = None,
        devset: Sequence[Example] | None = None,
        num_threads: int | None = None,
        display_progress: bool | None = None,
        display_table: bool | int | None = None,
        callback_metadata: dict[str, Any] | None = None,
        save_as_csv: str | None = None,
        save_as_json: str | None = None,
        *,
        return_traces: bool | None = None,
    ) -> EvaluationResult:
        """Score ``program`` on the dev set. Each argument overrides the constructor's for this call;
        ``callback_metadata`` is for callback handlers (they see it among the call's inputs)."""
        metric = metric or self.metric
        devset = list(devset) if devset is not None else self.devset
        if metric is None:
            raise MetricError("Evaluate needs a metric: Evaluate(devset=..., metric=fn)")
        keep = self.return_traces if return_traces is None else return_traces
        show = self.display_progress if display_progress is None else display_progress
        threads = num_threads if num_threads is not None else self.num_threads
        threads = _check_threads(threads if threads is not None else _settings.current().num_threads)
        stop = _Stopper(self.max_errors)

        def one(example: Example) -> ExampleResult | None:
            if stop.stopped:  # queued examples are skipped once the run is over its error budget
                return None
            try:
                result = run_one(program, example, metric, keep_traces=keep, pass_trace=False)
            except (MetricError, LMUnavailableError):
                stop.stopped = True
                raise
            if result.error is not None:
                stop.failed(result)
            return result

        bar = _progress(len(devset), "Evaluate") if show else None
        try:
            with activity("evaluation"):
                outcomes = parallel_map(one, devset, num_threads=threads, progress=bar)
        finally:
            if bar is not None:
                bar.close()
        for outcome in outcomes:
            # A MetricError (non-number score) is the metric's bug; an open breaker means no server.
            if isinstance(outcome.error, (MetricError, LMUnavailableError)):
                raise outcome.error
        if stop.stopped:
            raise EvaluationError(
                f"Evaluate stopped: {stop.count} examples failed, more than max_errors={self.max_errors} "
                f"({stop.counts}); first error: {stop.first}"
            )
        results: list[ExampleResult] = []
        for outcome, example in zip(outcomes, devset, strict=True):
            if outcome.error is not None:
                results.append(
                    ExampleResult(
                        example,
                        None,
                        self.failure_score,
                        f"program: {type(outcome.error).__name__}: {outcome.error}",
                        "program",
                    )
                )
            else:
                results.append(outcome.value)
        for r in results:
            if r.error is not None:
                r.score = self.failure_score
        counts: dict[str, int] = {}
        for r in results:
            if r.error_kind:
                counts[r.error_kind] = counts.get(r.error_kind, 0) + 1
        failures = sum(counts.values())
        if results and counts.get("metric") == len(results):
            # A metric that raises on every example is broken (wrong signature, wrong field name);
            # a score of 0.0 would hide it.
            first = next(r.error for r in results if r.error_kind == "metric")
            raise EvaluationError(
                f"Evaluate: the metric raised on all {len(results)} examples, so there is no score; "
                f"first error: {first}. Evaluate calls metric(example, prediction)."
            )
        if self.raise_if_all_failed and results and failures == len(results):
            first = next(r.error for r in results if r.error)
            raise AllExamplesFailedError(
                f"Evaluate: all {failures} examples failed ({_kinds(counts)}), so there is no score; "
                f"first error: {first}{_format_hint(counts)}",
                error_counts=counts,
            )
        score = 100.0 * sum(r.score for r in results) / max(1, len(results))
        if failures:
            logger.warning("Evaluate: %d of %d examples failed: %s", failures, len(results), counts)
        logger.info("Evaluate: score %.2f on %d examples", score, len(results))
        result = EvaluationResult(score=round(score, 2), results=results, error_counts=counts)
        display_table = self.display_table if display_table is None else display_table
        if display_table:
            limit = display_table if not isinstance(display_table, bool) else 20
            logger.info("Evaluate results:\n%s", result.table(limit))
        save_as_csv = save_as_csv or self.save_as_csv
        save_as_json = save_as_json or self.save_as_json
        if save_as_csv or save_as_json:
            rows = results_rows(results, _metric_name(metric))
            if save_as_csv:
                _write_csv(save_as_csv, rows)
            if save_as_json:
                with open(save_as_json, "w", encoding="utf-8") as f:
                    json.dump(rows, f, default=_jsonable)
        return result


def results_rows(results: list[ExampleResult], metric_name: str) -> list[dict[str, Any]]:
    """One flat dict per example, as DSPy's ``save_as_json``/``save_as_csv`` write them: the example's
    fields and the prediction's (a name in both is ``example_<name>`` / ``pred_<name>``), plus the score
    under the metric's name."""
    rows = []
    for r in results:
        example = r.example.toDict()
        prediction = r.prediction
        if prediction is not None and hasattr(prediction, "items"):
            predicted = dict(prediction.items())
            row = {(f"example_{k}" if k in predicted else k): v for k, v in example.items()}
            row.update({(f"pred_{k}" if k in example else k): v for k, v in predicted.items()})
        else:
            row = {**example, "prediction": prediction}
        row[metric_name] = r.score
        rows.append(row)
    return rows


def _metric_name(metric: Any) -> str:
    return getattr(metric, "__name__", None) or type(metric).__name__


def _jsonable(value: Any) -> Any:
    from dspylite.coerce import to_jsonable

    converted = to_jsonable(value)
    return str(value) if converted is value else converted


def _write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    import csv

    if not rows:
        return
    fieldnames = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_cell(v) for k, v in row.items()})


def _csv_cell(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(_jsonable(value), ensure_ascii=False, default=str)


class _Stopper:
    """Counts failed examples across worker threads and flags the run once past ``max_errors``."""

    def __init__(self, max_errors: int | None):
        self.max_errors = max_errors
        self.count = 0
        self.counts: dict[str, int] = {}
        self.first: str | None = None
        self.stopped = False
        self._lock = threading.Lock()

    def failed(self, result: ExampleResult) -> None:
        with self._lock:
            self.count += 1
            kind = result.error_kind or "program"
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.first = self.first or result.error
            if self.max_errors is not None and self.count > self.max_errors:
                self.stopped = True


def _check_threads(num_threads: Any) -> int:
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ConfigError(f"Evaluate: 'num_threads' must be an integer >= 1, got {num_threads!r}")
    return num_threads


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)
