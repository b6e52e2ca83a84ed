"""BootstrapFewShot: run a teacher over the trainset and keep the traces of passing runs as demos.

Teacher runs go out concurrently, but never more of them than could still be needed: a run on
example j starts only while (passes so far + runs in flight) < max_bootstrapped_demos. Every run
started is therefore one a one-at-a-time loop over the trainset (DSPy's) would also have made, so
the concurrency costs no extra LM calls.
"""

from __future__ import annotations

import contextvars
import logging
import random
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dspylite import settings as _settings
from dspylite.activity import activity
from dspylite.errors import OptimizerError
from dspylite.evaluate import example_id
from dspylite.example import Example
from dspylite.optimizers._compile import OpenedCompile, PromptOptimizer
from dspylite.optimizers._eval import (
    EvalOutcome,
    Metric,
    ProgramScorer,
    ScoredRun,
    always_pass,
    check_positive,
    passes,
    run_scored,
    strip_demos,
)
from dspylite.optimizers._run import OptimizerRun, fingerprint_value
from dspylite.optimizers.labeled_fewshot import attach_labeled, fits
from dspylite.run_dir import RunDir
from dspylite.trace import _jsonable

logger = logging.getLogger(__name__)


class TeacherOptions(Protocol):
    """The teacher-run settings that BootstrapFewShot, random search and MIPROv2 each hold as attributes."""

    metric: Metric | None
    metric_threshold: float | None
    teacher_settings: dict
    max_rounds: int
    max_errors: int | None
    num_threads: int
    progress: bool


@dataclass
class BootstrapOutcome:
    program: Any  # a student copy with bootstrapped + labeled demos
    augmented: dict[str, list[Example]]
    n_passed: int
    n_tried: int
    errors: dict[str, int] = field(default_factory=dict)
    budget_hit: bool = False


class Bootstrapper:
    """The bootstrapping step shared by BootstrapFewShot, random search and MIPROv2.

    Each teacher run is one row (kind "bootstrap", keyed by ``tag`` and the example's index) in the
    run's trials, so a resumed run reuses it.
    """

    def __init__(
        self,
        *,
        metric: Metric | None,
        metric_threshold: float | None,
        teacher_settings: dict | None,
        max_bootstrapped_demos: int,
        max_labeled_demos: int,
        max_rounds: int,
        max_errors: int | None,
        num_threads: int,
        scorer: ProgramScorer,
        run: OptimizerRun,
        progress: bool = True,
        labeled_seed: int = 0,
    ):
        self.metric = metric or always_pass
        self.metric_threshold = metric_threshold
        self.teacher_settings = dict(teacher_settings or {})
        self.max_bootstrapped_demos = max_bootstrapped_demos
        self.max_labeled_demos = max_labeled_demos
        self.max_rounds = max_rounds
        self.max_errors = max_errors
        self.num_threads = max(1, num_threads)
        self.scorer = scorer
        self.run = run
        self.progress = progress
        self.labeled_seed = labeled_seed

    @classmethod
    def for_optimizer(
        cls,
        optimizer: TeacherOptions,
        *,
        max_bootstrapped_demos: int,
        max_labeled_demos: int,
        labeled_seed: int,
        scorer: ProgramScorer,
        run: OptimizerRun,
    ) -> Bootstrapper:
        """A Bootstrapper that runs the teacher as ``optimizer`` is configured to.

        Only the demo budgets and the labeled-demo seed are per call: random search and MIPROv2 draw
        them anew for every candidate demo set.
        """
        return cls(
            metric=optimizer.metric,
            metric_threshold=optimizer.metric_threshold,
            teacher_settings=optimizer.teacher_settings,
            max_bootstrapped_demos=max_bootstrapped_demos,
            max_labeled_demos=max_labeled_demos,
            max_rounds=optimizer.max_rounds,
            max_errors=optimizer.max_errors,
            num_threads=optimizer.num_threads,
            scorer=scorer,
            run=run,
            progress=optimizer.progress,
            labeled_seed=labeled_seed,
        )

    # ---- the teacher ----------------------------------------------------------------------------------
    def prepare_teacher(self, student: Any, teacher: Any, trainset: list[Example]) -> Any:
        if teacher is None:
            base = strip_demos(student.deepcopy())
        else:
            base = teacher.deepcopy()
            names = [n for n, _ in base.named_predictors()]
            expected = [n for n, _ in student.named_predictors()]
            if sorted(names) != sorted(expected):
                raise OptimizerError(
                    f"the teacher's predictors {names} do not match the student's {expected}; "
                    "the teacher must have the student's structure"
                )
        if self.max_labeled_demos and not getattr(base, "_compiled", False):
            # As in DSPy: an uncompiled teacher is first given labeled demos, which makes passing runs likelier.
            attach_labeled(strip_demos(base), trainset, self.max_labeled_demos, seed=self.labeled_seed)
        return self.scorer.runnable(base)

    @staticmethod
    def _without_example(teacher: Any, example: Example) -> Any:
        # A teacher must not see the answer to the example it is solving among its own demos.
        if not any(example in p.demos for p in teacher.predictors()):
            return teacher
        copy = teacher.deepcopy()
        for predictor in copy.predictors():
            predictor.demos = [d for d in predictor.demos if d != example]
        return copy

    # ---- one example ------------------------------------------------------------------------------------
    def _attempt(self, teacher: Any, example: Example, index: int, tag: str) -> dict[str, Any] | None:
        program = self._without_example(teacher, example)
        base_kwargs = dict(_settings.current().lm_kwargs)
        errors: list[str] = []
        last: ScoredRun | None = None
        for round_idx in range(self.max_rounds):
            # Later rounds sample (temperature 1.0) under a new rollout id, so the cache gives new answers.
            lm_kwargs = {**base_kwargs, "temperature": 1.0} if round_idx > 0 else base_kwargs
            with _settings.context(lm_kwargs=lm_kwargs):
                run = run_scored(
                    program, example, self.metric, rollout_id=round_idx or None, metric_sees_trace=True
                )
            if run.budget_hit or (run.error_kind and self.scorer.budget.exhausted):
                return None
            last = run
            self.scorer.note_error(run)
            if run.error_kind:
                errors.append(run.error_kind)
                continue
            if passes(run.score, self.metric_threshold):
                return {
                    "kind": "bootstrap",
                    "tag": tag,
                    "index": index,
                    "example_id": example_id(example),
                    "passed": True,
                    "round": round_idx,
                    "score": run.score,
                    "errors": errors,
                    "demos": self._demos_from(run),
                }
        return {
            "kind": "bootstrap",
            "tag": tag,
            "index": index,
            "example_id": example_id(example),
            "passed": False,
            "round": self.max_rounds - 1,
            "score": last.score if last else 0.0,
            "errors": errors,
            "error": (last.error or "")[:300] if last and last.error else None,
            "demos": {},
        }

    @staticmethod
    def _demos_from(run: ScoredRun) -> dict[str, list[dict[str, Any]]]:
        demos: dict[str, list[dict[str, Any]]] = {}
        for rec in run.traces:
            if not rec.ok:
                continue
            demo = {"augmented": True, **_jsonable(rec.inputs), **_jsonable(rec.outputs)}
            demos.setdefault(rec.predictor_name, []).append(demo)
        return demos

    # ---- the whole trainset -----------------------------------------------------------------------------
    def bootstrap(
        self, student: Any, teacher: Any, trainset: list[Example], *, tag: str = "main"
    ) -> BootstrapOutcome:
        names = [n for n, _ in student.named_predictors()]
        done = {r["index"]: r for r in self.run.done("bootstrap", tag=tag)}
        needed = self.max_bootstrapped_demos
        passed = {i for i, r in done.items() if r.get("passed")}
        error_total = sum(len(r.get("errors", [])) for r in done.values())
        budget_hit = False
        if needed > 0 and len(passed) < needed:
            teacher_run = self.prepare_teacher(student, teacher, trainset)
            pending = deque(i for i in range(len(trainset)) if i not in done)
            with (
                # The teacher runs are program runs in the wall-time breakdown (dspylite.activity); its own
                # pool is not parallel_map, which labels them for the other optimizers.
                activity("program runs", default=True),
                _settings.context(**self.teacher_settings),
                self.scorer.budget.counting_settings(),
                self._bar(len(trainset), len(done), tag) as bar,
                ThreadPoolExecutor(self.num_threads) as pool,
            ):
                in_flight: dict[Future, int] = {}
                try:
                    while True:
                        while (
                            pending
                            and len(passed) + len(in_flight) < needed
                            and len(in_flight) < self.num_threads
                            and not self.scorer.budget.exhausted
                        ):
                            i = pending.popleft()
                            ctx = contextvars.copy_context()
                            in_flight[
                                pool.submit(ctx.run, self._attempt, teacher_run, trainset[i], i, tag)
                            ] = i
                        if not in_flight:
                            break
                        finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                        for future in finished:
                            i = in_flight.pop(future)
                            row = future.result()  # MetricError (a non-number from the metric) stops here
                            if bar is not None:
                                bar.update(1)
                            if row is None:
                                budget_hit = True
                                continue
                            done[i] = self.run.record(row)
                            error_total += len(row["errors"])
                            if row["passed"]:
                                passed.add(i)
                            # DSPy's rule: the max_errors-th failed teacher run stops bootstrapping
                            # (None: never; DSPy would use settings.max_errors).
                            if self.max_errors is not None and error_total >= self.max_errors:
                                raise OptimizerError(
                                    f"bootstrapping: {error_total} teacher runs failed (max_errors={self.max_errors}); "
                                    f"last error: {row.get('error')}"
                                )
                finally:
                    for future in in_flight:
                        future.cancel()
            budget_hit = budget_hit or (self.scorer.budget.exhausted and len(passed) < needed)
        return self._assemble(student, trainset, names, done, passed, budget_hit)

    def _assemble(
        self,
        student: Any,
        trainset: list[Example],
        names: list[str],
        done: dict[int, dict[str, Any]],
        passed: set[int],
        budget_hit: bool,
    ) -> BootstrapOutcome:
        augmented: dict[str, list[Example]] = {name: [] for name in names}
        used: set[int] = set()
        for i in sorted(passed)[: self.max_bootstrapped_demos]:
            used.add(i)
            for name, demos in done[i]["demos"].items():
                if name in augmented:
                    augmented[name].extend(Example(**d) for d in demos)
                else:
                    logger.warning(
                        "bootstrapping: trace from predictor %r, which the student does not have", name
                    )
        for name in augmented:
            augmented[name] = augmented[name][: self.max_bootstrapped_demos]
        # Labeled demos fill the rest, drawn from the examples that gave no bootstrapped demo.
        raw = [ex for i, ex in enumerate(trainset) if i not in used]
        rng = random.Random(self.labeled_seed)
        program = strip_demos(student.deepcopy())
        for name, predictor in program.named_predictors():
            usable = [ex for ex in raw if fits(predictor.signature, ex)]
            size = min(max(0, self.max_labeled_demos - len(augmented[name])), len(usable))
            labeled = [ex.copy() for ex in rng.sample(usable, size)] if size else []
            predictor.demos = augmented[name] + labeled
        program._compiled = True
        errors: dict[str, int] = {}
        for row in done.values():
            for kind in row.get("errors", []):
                errors[kind] = errors.get(kind, 0) + 1
        return BootstrapOutcome(program, augmented, len(used), len(done), errors, budget_hit)

    def _bar(self, total: int, initial: int, tag: str):
        import contextlib

        if not self.progress:
            return contextlib.nullcontext(None)
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=f"Bootstrap ({tag})", dynamic_ncols=True, leave=False)


class BootstrapFewShot(PromptOptimizer):
    """DSPy's BootstrapFewShot: demos from the teacher's passing traces, labeled examples fill the rest.

    ``compile(student, trainset=..., valset=None, teacher=None)`` returns a new program, marked
    ``_compiled``; the student is untouched. With a ``valset`` the student and the result are both
    scored there (the report shows before and after). When no teacher run passes, the program gets
    labeled demos only (as in DSPy), with a warning in the log and the report. ``max_errors``: the
    max_errors-th failed teacher run stops compiling (as in DSPy); None never stops.
    """

    def __init__(
        self,
        metric: Metric | None = None,
        metric_threshold: float | None = None,
        teacher_settings: dict | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 16,
        max_rounds: int = 1,
        max_errors: int | None = None,
        num_threads: int = 8,
        *,
        max_lm_calls: int | None = None,
        run_dir: str | Path | RunDir | None = None,
        seed: int = 0,
        progress: bool = True,
    ):
        check_positive(max_bootstrapped_demos, "max_bootstrapped_demos", allow_zero=True)
        check_positive(max_labeled_demos, "max_labeled_demos", allow_zero=True)
        check_positive(max_rounds, "max_rounds")
        check_positive(num_threads, "num_threads")
        if max_bootstrapped_demos == 0 and max_labeled_demos == 0:
            raise OptimizerError(
                "max_bootstrapped_demos=0 and max_labeled_demos=0: there is no demo budget to fill"
            )
        if metric is not None and not callable(metric):
            raise OptimizerError("metric must be a callable (example, prediction, trace=None) -> number")
        self.metric = metric
        self.metric_threshold = metric_threshold
        self.teacher_settings = teacher_settings or {}
        self.max_bootstrapped_demos = max_bootstrapped_demos
        self.max_labeled_demos = max_labeled_demos
        self.max_rounds = max_rounds
        self.max_errors = max_errors
        self.num_threads = num_threads
        self.max_lm_calls = max_lm_calls
        self.run_dir = run_dir
        self.seed = seed
        self.progress = progress
        self.summary: dict[str, Any] = {}
        if max_lm_calls is not None:
            check_positive(max_lm_calls, "max_lm_calls")

    def _options(self) -> dict[str, Any]:
        return {
            "metric_threshold": self.metric_threshold,
            "teacher_settings": fingerprint_value(self.teacher_settings),
            "max_bootstrapped_demos": self.max_bootstrapped_demos,
            "max_labeled_demos": self.max_labeled_demos,
            "max_rounds": self.max_rounds,
            "seed": self.seed,
        }

    def compile(
        self,
        student: Any,
        *,
        trainset: list[Example],
        valset: list[Example] | None = None,
        teacher: Any = None,
    ) -> Any:
        opened = self.open_compile(student, trainset, valset, teacher)
        run, scorer = opened.run, opened.scorer
        score_valset = self.metric is not None and bool(opened.valset)
        before = scorer.evaluate(student, opened.valset, desc="Evaluate student") if score_valset else None
        bootstrapper = Bootstrapper.for_optimizer(
            self,
            max_bootstrapped_demos=self.max_bootstrapped_demos,
            max_labeled_demos=self.max_labeled_demos,
            labeled_seed=self.seed,
            scorer=scorer,
            run=run,
        )
        outcome = bootstrapper.bootstrap(student, teacher, opened.trainset, tag="main")
        compiled = outcome.program  # as DSPy: labeled demos fill whatever bootstrapping did not
        if self.max_bootstrapped_demos > 0 and outcome.n_passed == 0:
            if outcome.budget_hit:
                run.warn(
                    f"the LM-call budget (max_lm_calls={self.max_lm_calls}) ran out after {outcome.n_tried} "
                    "teacher runs, before any passed; the program has labeled demos only"
                )
            else:
                run.warn(
                    f"the teacher never passed the metric: 0 of {outcome.n_tried} trainset examples "
                    f"(errors: {outcome.errors or 'none'}); the program has labeled demos only"
                )
        elif outcome.budget_hit:
            run.warn(
                f"the LM-call budget ran out while bootstrapping: {outcome.n_passed} of "
                f"{self.max_bootstrapped_demos} demos found"
            )
        after = scorer.evaluate(compiled, opened.valset, desc="Evaluate compiled") if score_valset else None
        return self._finish(opened, compiled, outcome, before, after)

    def _finish(
        self,
        opened: OpenedCompile,
        compiled: Any,
        outcome: BootstrapOutcome,
        before: EvalOutcome | None,
        after: EvalOutcome | None,
    ) -> Any:
        rows = sorted(opened.run.done("bootstrap", tag="main"), key=lambda r: r["index"])
        table = [
            {
                "trial": n,
                "example": r["index"],
                "passed": r["passed"],
                "round": r["round"],
                "score": r["score"],
                "errors": ",".join(r.get("errors", [])),
                "demos": sum(len(v) for v in r.get("demos", {}).values()),
            }
            for n, r in enumerate(rows)
        ]
        logger.info(
            "BootstrapFewShot: %d of %d teacher runs passed; valset %s -> %s; %d LM calls",
            outcome.n_passed,
            outcome.n_tried,
            before.score if before else None,
            after.score if after else None,
            opened.run.budget.calls,
        )
        series = {
            "teacher score (%)": ([r["trial"] for r in table], [100.0 * float(r["score"]) for r in table])
        }
        return self.finish_compile(
            opened,
            compiled,
            summary={
                "score_before": before.score if before else None,
                "score_after": after.score if after else None,
                "teacher_runs": outcome.n_tried,
                "passed": outcome.n_passed,
                "bootstrapped_demos": {k: len(v) for k, v in outcome.augmented.items()},
            },
            trial_rows=table,
            columns=["trial", "example", "passed", "round", "score", "errors", "demos"],
            series=series,
        )
