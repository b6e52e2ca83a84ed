"""What every optimizer shares: an LM-call budget, a score cache, and scored program runs.

- ``LMBudget`` + ``CountingLM``: every LM the optimizer's programs use is wrapped so each request
  is counted; a request the budget cannot pay for raises ``BudgetExhausted`` *and* flips
  ``budget.exhausted``, which is how callers learn that a run was cut short (the exception itself is
  caught by the program like any other error). Cache hits are refunded: the budget counts requests
  that reached the server.
- ``ScoreCache``: (program state, example, rollout) -> score, persisted as JSONL in the run
  directory so a resumed run does not pay for an evaluation twice.
- ``ProgramScorer``: runs a program on examples concurrently with traces, scores them with the
  metric, counts failures by kind (parse, lm, program, metric) and never lets a metric exception
  stop the run; a metric returning a non-number raises ``MetricError`` at once.

GRPO and BetterTogether reuse these pieces.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspylite import settings as _settings
from dspylite.errors import BudgetExhausted, OptimizerError
from dspylite.evaluate import example_id, run_one
from dspylite.example import Example, Prediction
from dspylite.trace import TraceRecord
from dspylite.utils.io import append_jsonl, read_jsonl
from dspylite.utils.parallel import parallel_map

logger = logging.getLogger(__name__)

Metric = Callable[..., Any]


# ---- budget -------------------------------------------------------------------------------------


class LMBudget:
    """Counts LM requests across threads; refuses the one that would go over ``max_calls``."""

    def __init__(self, max_calls: int | None = None, *, already_used: int = 0):
        if max_calls is not None and (isinstance(max_calls, bool) or int(max_calls) <= 0):
            raise OptimizerError(
                f"max_lm_calls must be a positive number of LM calls or None, got {max_calls!r}"
            )
        self.max_calls = None if max_calls is None else int(max_calls)
        self._lock = threading.Lock()
        self.calls = already_used  # requests answered by the server (cache hits refunded)
        self.cache_hits = 0
        self.refused = 0
        self.exhausted = self.max_calls is not None and self.calls >= self.max_calls

    def charge(self) -> None:
        with self._lock:
            if self.max_calls is not None and self.calls >= self.max_calls:
                self.exhausted = True
                self.refused += 1
                raise BudgetExhausted(
                    f"the LM-call budget is spent ({self.calls} of max_lm_calls={self.max_calls})"
                )
            self.calls += 1

    def refund_cache_hit(self) -> None:
        with self._lock:
            self.calls -= 1
            self.cache_hits += 1
            if self.max_calls is not None and self.calls < self.max_calls:
                self.exhausted = False

    @property
    def remaining(self) -> int | None:
        return None if self.max_calls is None else max(0, self.max_calls - self.calls)

    def summary(self) -> dict[str, Any]:
        return {
            "lm_calls": self.calls,
            "max_lm_calls": self.max_calls,
            "lm_cache_hits": self.cache_hits,
            "budget_exhausted": self.exhausted,
        }

    def wrap(self, lm: Any) -> Any:
        if lm is None or (isinstance(lm, CountingLM) and lm.budget is self):
            return lm
        return CountingLM(lm, self)

    @contextlib.contextmanager
    def counting_settings(self) -> Iterator[None]:
        """Count calls made through the context's default LM (predictors with no LM of their own)."""
        lm = _settings.current().lm
        if lm is None:
            yield
            return
        with _settings.context(lm=self.wrap(lm)):
            yield


class CountingLM:
    """Wraps any ``LanguageModel``; charges the budget per request. Everything else is delegated."""

    def __init__(self, inner: Any, budget: LMBudget):
        self._inner = inner
        self.budget = budget

    @property
    def model(self) -> str:
        return self._inner.model

    @property
    def inner(self) -> Any:
        return self._inner

    def generate(
        self, messages: Any, *, n: int = 1, rollout_id: int | None = None, **kwargs: Any
    ) -> list[Any]:
        self.budget.charge()
        completions = self._inner.generate(messages, n=n, rollout_id=rollout_id, **kwargs)
        if completions and all(getattr(c, "cached", False) for c in completions):
            self.budget.refund_cache_hit()
        return completions

    def copy(self, **overrides: Any) -> CountingLM:
        return CountingLM(self._inner.copy(**overrides), self.budget)

    def dump_state(self) -> dict[str, Any]:
        return self._inner.dump_state()

    def __deepcopy__(self, memo: dict[int, Any]) -> CountingLM:
        return CountingLM(copy.deepcopy(self._inner, memo), self.budget)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return f"CountingLM({self._inner!r})"


def unwrap_lm(lm: Any) -> Any:
    while isinstance(lm, CountingLM):
        lm = lm.inner
    return lm


# ---- program identity ---------------------------------------------------------------------------

# LM settings that change where or how a request travels, not what the model answers.
_TRANSPORT_KEYS = frozenset({"api_base", "timeout", "num_retries", "cache", "api_key"})


def lm_identity(lm: Any) -> dict[str, Any] | None:
    lm = unwrap_lm(lm)
    if lm is None:
        return None
    try:
        state = lm.dump_state()
    except Exception:  # a user's LM without dump_state: its type and model still tell programs apart
        state = {"model": getattr(lm, "model", type(lm).__name__)}
    return {k: v for k, v in state.items() if k not in _TRANSPORT_KEYS}


def program_key(program: Any) -> str:
    """A hash of what decides a program's answers: per predictor its signature, demos and LM."""
    default_lm = lm_identity(_settings.current().lm)
    state = {}
    for name, predictor in program.named_predictors():
        pstate = predictor.dump_state()
        pstate.pop("lm", None)
        pstate["lm"] = lm_identity(predictor.lm) if predictor.lm is not None else default_lm
        pstate["fields"] = predictor.signature.signature
        state[name] = pstate
    blob = json.dumps(state, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


def examples_key(examples: Sequence[Example]) -> str:
    blob = json.dumps([example_id(e) for e in examples])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def strip_demos(program: Any) -> Any:
    for predictor in program.predictors():
        predictor.demos = []
    return program


# ---- checks on user input -----------------------------------------------------------------------


def check_examples(examples: Any, name: str, *, allow_empty: bool = False) -> list[Example]:
    """A list of Examples with input keys; errors name the argument and the index at fault."""
    if examples is None:
        raise OptimizerError(f"{name} is required (a list of dspylite.Example)")
    examples = list(examples)
    if not examples and not allow_empty:
        raise OptimizerError(f"{name} is empty: the optimizer needs at least one example")
    for i, ex in enumerate(examples):
        if not isinstance(ex, Example):
            raise OptimizerError(f"{name}[{i}] is a {type(ex).__name__}, not a dspylite.Example")
        if ex.input_keys is None:
            raise OptimizerError(
                f"{name}[{i}] has no input keys; build it with Example(...).with_inputs('field', ...)"
            )
    return examples


def check_metric(metric: Any, owner: str) -> None:
    if metric is None or not callable(metric):
        raise OptimizerError(f"{owner} needs metric=a callable (example, prediction, trace=None) -> number")


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (value == 0 and not allow_zero):
        kind = "a non-negative" if allow_zero else "a positive"
        raise OptimizerError(f"{name} must be {kind} integer, got {value!r}")


def always_pass(example: Any, prediction: Any, trace: Any = None) -> bool:
    """The metric of an optimizer given none: every run that finishes passes."""
    return True


def passes(score: float, threshold: float | None) -> bool:
    """DSPy's rule: with a threshold, score >= threshold; without one, any truthy score."""
    return score >= threshold if threshold is not None else bool(score)


# ---- one scored run ------------------------------------------------------------------------------


@dataclass
class ScoredRun:
    example: Example
    prediction: Prediction | None
    score: float
    error_kind: str | None = None  # "parse" | "lm" | "program" | "metric"
    error: str | None = None
    traces: list[TraceRecord] = field(default_factory=list)
    budget_hit: bool = False  # the run was cut short by the budget: its score means nothing


def run_scored(
    program: Any,
    example: Example,
    metric: Metric,
    *,
    rollout_id: int | None = None,
    metric_sees_trace: bool = False,
    failure_score: float = 0.0,
) -> ScoredRun:
    """``dspylite.evaluate.run_one`` (the one program runner) in the optimizers' terms.

    ``metric_sees_trace`` passes the run's TraceRecords as the metric's third argument (bootstrapping
    does this, as DSPy passes its trace, so metrics can be stricter there); else the third argument
    is None. ``MetricError`` and ``LMUnavailableError`` propagate; a run cut short by the budget is
    labelled ``budget_hit``.
    """
    result = run_one(
        program,
        example,
        metric,
        keep_traces=True,
        rollout_id=rollout_id,
        metric_trace="traces" if metric_sees_trace else "none",
    )
    if result.error_kind is None:
        return ScoredRun(example, result.prediction, result.score, traces=result.traces)
    return ScoredRun(
        example,
        result.prediction,
        failure_score,
        result.error_kind,
        result.error,
        result.traces,
        budget_hit=result.error_kind == "budget",
    )


# ---- the score cache -----------------------------------------------------------------------------


@dataclass
class CachedScore:
    score: float
    error_kind: str | None = None


class ScoreCache:
    """(program key, example id, rollout id) -> score; thread-safe, optionally persisted as JSONL."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._scores: dict[str, CachedScore] = {}
        self.hits = 0
        if self.path is not None:
            for row in read_jsonl(self.path):
                try:
                    self._scores[row["key"]] = CachedScore(float(row["score"]), row.get("error_kind"))
                except (KeyError, TypeError, ValueError):
                    continue

    @staticmethod
    def key(program_key: str, example: Example, rollout_id: int | None = None) -> str:
        return f"{program_key}:{example_id(example)}:{rollout_id}"

    def get(self, key: str) -> CachedScore | None:
        with self._lock:
            hit = self._scores.get(key)
            if hit is not None:
                self.hits += 1
            return hit

    def put(self, key: str, value: CachedScore) -> None:
        with self._lock:
            self._scores[key] = value
            if self.path is not None:
                append_jsonl(self.path, {"key": key, "score": value.score, "error_kind": value.error_kind})

    def __len__(self) -> int:
        return len(self._scores)


# ---- evaluating programs -------------------------------------------------------------------------


@dataclass
class EvalOutcome:
    """``score`` is a percentage over the examples scored (as ``Evaluate`` reports it)."""

    score: float
    scores: list[float]
    errors: dict[str, int]
    complete: bool  # False when the budget ran out before every example was scored
    cached: int = 0

    @property
    def n(self) -> int:
        return len(self.scores)


class ProgramScorer:
    """Scores programs on examples for an optimizer: cached, budgeted, concurrent, with progress."""

    def __init__(
        self,
        metric: Metric,
        *,
        budget: LMBudget,
        cache: ScoreCache | None = None,
        num_threads: int = 8,
        progress: bool = True,
        failure_score: float = 0.0,
    ):
        self.metric = metric
        self.budget = budget
        self.cache = cache or ScoreCache()
        self.num_threads = max(1, int(num_threads or 1))
        self.progress = progress
        self.failure_score = failure_score
        self.error_counts: dict[str, int] = {}
        self.error_examples: list[str] = []
        self._lock = threading.Lock()

    def runnable(self, program: Any) -> Any:
        """A copy of ``program`` whose own LMs count against the budget (the original is untouched)."""
        run_copy = program.deepcopy()
        for predictor in run_copy.predictors():
            if predictor.lm is not None:
                predictor.lm = self.budget.wrap(predictor.lm)
        return run_copy

    def note_error(self, run: ScoredRun) -> None:
        if run.error_kind is None or run.budget_hit:
            return
        with self._lock:
            self.error_counts[run.error_kind] = self.error_counts.get(run.error_kind, 0) + 1
            if len(self.error_examples) < 20:
                self.error_examples.append(f"{run.error_kind}: {run.error}"[:300])

    def evaluate(
        self,
        program: Any,
        examples: Sequence[Example],
        *,
        desc: str = "Evaluate",
        rollout_id: int | None = None,
    ) -> EvalOutcome:
        key = program_key(program)
        examples = list(examples)
        results: list[CachedScore | None] = [None] * len(examples)
        todo: list[int] = []
        for i, ex in enumerate(examples):
            hit = self.cache.get(ScoreCache.key(key, ex, rollout_id))
            if hit is not None:
                results[i] = hit
            else:
                todo.append(i)
        cached = len(examples) - len(todo)
        errors: dict[str, int] = {}
        for hit in results:
            if hit is not None and hit.error_kind:
                errors[hit.error_kind] = errors.get(hit.error_kind, 0) + 1
        complete = True
        if todo and not self.budget.exhausted:
            runnable = self.runnable(program)

            def score_one(i: int) -> CachedScore | None:
                if self.budget.exhausted:  # don't start runs the budget cannot finish
                    return None
                run = run_scored(
                    runnable,
                    examples[i],
                    self.metric,
                    rollout_id=rollout_id,
                    failure_score=self.failure_score,
                )
                if run.budget_hit or (run.error_kind is not None and self.budget.exhausted):
                    return None  # cut short by the budget (maybe a refused call the program caught): no score
                self.note_error(run)
                value = CachedScore(run.score, run.error_kind)
                # Stored as soon as it is known, so a run killed mid-evaluation keeps what it finished.
                self.cache.put(ScoreCache.key(key, examples[i], rollout_id), value)
                return value

            with self.budget.counting_settings(), self._bar(len(todo), desc) as bar:
                outcomes = parallel_map(score_one, todo, num_threads=self.num_threads, progress=bar)
            for outcome, i in zip(outcomes, todo, strict=True):
                if outcome.error is not None:  # only MetricError and LMUnavailableError escape run_scored
                    raise outcome.error
                if outcome.value is None:
                    complete = False
                    continue
                results[i] = outcome.value
                if outcome.value.error_kind:
                    errors[outcome.value.error_kind] = errors.get(outcome.value.error_kind, 0) + 1
        elif todo:
            complete = False
        scores = [r.score for r in results if r is not None]
        percent = round(100.0 * sum(scores) / len(scores), 2) if scores else 0.0
        return EvalOutcome(percent, scores, errors, complete and len(scores) == len(examples), cached)

    @contextlib.contextmanager
    def _bar(self, total: int, desc: str) -> Iterator[Any]:
        if not self.progress:
            yield None
            return
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)
        try:
            yield bar
        finally:
            bar.close()
