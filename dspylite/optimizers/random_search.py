"""BootstrapFewShotWithRandomSearch: several demo sets, each scored on the valset; the best one wins.

Candidates, in DSPy's order: the student zero-shot (seed -3), labeled demos only (-2), bootstrapped
from the trainset in order (-1), then ``num_candidate_programs`` bootstraps from shuffled copies of the
trainset with a random number of bootstrapped demos (seeds 0, 1, ...). Each scored candidate is a row
in trials.jsonl and its program a checkpoint, so a resumed search skips it.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from dspylite.example import Example
from dspylite.optimizers._compile import OpenedCompile, PromptOptimizer
from dspylite.optimizers._eval import Metric, ProgramScorer, check_metric, check_positive, strip_demos
from dspylite.optimizers._run import OptimizerRun, fingerprint_value, trial_bar
from dspylite.optimizers.bootstrap import Bootstrapper
from dspylite.optimizers.labeled_fewshot import attach_labeled
from dspylite.run_dir import RunDir

logger = logging.getLogger(__name__)


class BootstrapFewShotWithRandomSearch(PromptOptimizer):
    def __init__(
        self,
        metric: Metric,
        teacher_settings: dict | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 16,
        max_rounds: int = 1,
        num_candidate_programs: int = 8,
        num_threads: int = 8,
        max_errors: int | None = None,
        stop_at_score: float | None = None,
        metric_threshold: float | None = None,
        *,
        seed: int = 0,
        max_lm_calls: int | None = None,
        run_dir: str | Path | RunDir | None = None,
        progress: bool = True,
    ):
        check_metric(metric, "BootstrapFewShotWithRandomSearch")
        check_positive(max_bootstrapped_demos, "max_bootstrapped_demos", allow_zero=True)
        check_positive(max_labeled_demos, "max_labeled_demos", allow_zero=True)
        check_positive(max_rounds, "max_rounds")
        check_positive(num_candidate_programs, "num_candidate_programs")
        check_positive(num_threads, "num_threads")
        check_positive(max_lm_calls, "max_lm_calls")
        self.metric = metric
        self.teacher_settings = teacher_settings or {}
        self.max_bootstrapped_demos = max_bootstrapped_demos
        self.max_labeled_demos = max_labeled_demos
        self.max_rounds = max_rounds
        self.num_candidate_programs = num_candidate_programs
        self.num_threads = num_threads
        self.max_errors = max_errors
        self.stop_at_score = stop_at_score
        self.metric_threshold = metric_threshold
        self.seed = seed
        self.max_lm_calls = max_lm_calls
        self.run_dir = run_dir
        self.progress = progress
        self.summary: dict[str, Any] = {}
        self.candidate_programs: list[tuple[float, Any, int]] = []  # (score, program, seed), best first

    def _options(self) -> dict[str, Any]:
        return {
            "teacher_settings": fingerprint_value(self.teacher_settings),
            "max_bootstrapped_demos": self.max_bootstrapped_demos,
            "max_labeled_demos": self.max_labeled_demos,
            "max_rounds": self.max_rounds,
            "num_candidate_programs": self.num_candidate_programs,
            "metric_threshold": self.metric_threshold,
            "stop_at_score": self.stop_at_score,
            "seed": self.seed,
        }

    def compile(
        self,
        student: Any,
        *,
        trainset: list[Example],
        valset: list[Example] | None = None,
        teacher: Any = None,
        restrict: Any = None,
        labeled_sample: bool = True,
    ) -> Any:
        """``restrict``: only these candidate seeds (as DSPy numbers them: -3 zero-shot, -2 labeled demos
        only, -1 bootstrapped in trainset order, 0.. shuffled); ``labeled_sample=False`` gives the labeled
        candidate the first trainset examples instead of a random draw."""
        seeds = list(range(-3, self.num_candidate_programs))
        if restrict is not None:
            wanted = set(restrict)  # read once: restrict may be a single-use iterator
            seeds = [seed for seed in seeds if seed in wanted]
            if not seeds:
                raise ValueError(
                    f"restrict={sorted(wanted)} matches none of the candidate seeds "
                    f"-3..{self.num_candidate_programs - 1} (num_candidate_programs={self.num_candidate_programs})"
                )
        opened = self.open_compile(student, trainset, valset, teacher, valset_from_trainset=True)
        run, scorer, trainset, valset = opened.run, opened.scorer, opened.trainset, opened.valset
        done = {r["seed"]: r for r in run.done("candidate")}
        scored: list[tuple[float, int, Any]] = []
        bar = trial_bar(len(seeds), "Random search", show=self.progress, initial=len(done))
        try:
            for seed in seeds:
                if seed in done:
                    program = run.load_candidate(f"candidate_{seed}", student)
                    if program is not None:
                        scored.append((done[seed]["score"], seed, program))
                        continue
                if run.budget.exhausted:
                    run.warn(
                        f"the LM-call budget (max_lm_calls={self.max_lm_calls}) ran out; "
                        f"{len(seeds) - len(scored)} candidate(s) were not scored"
                    )
                    break
                program, label, n_boot = self._candidate(
                    seed, student, teacher, trainset, scorer, run, labeled_sample=labeled_sample
                )
                outcome = scorer.evaluate(program, valset, desc=f"Candidate {seed}")
                if not outcome.complete:
                    run.warn(f"the LM-call budget ran out while scoring candidate {seed}; it is not counted")
                    break
                run.save_candidate(f"candidate_{seed}", program)
                row = run.record(
                    {
                        "kind": "candidate",
                        "seed": seed,
                        "label": label,
                        "score": outcome.score,
                        "bootstrapped": n_boot,
                        "demos": _demo_count(program),
                        "errors": outcome.errors,
                    }
                )
                done[seed] = row
                scored.append((outcome.score, seed, program))
                best = max(scored, key=lambda t: (t[0], -t[1]))
                run.save_program(best[2])
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(best=best[0])
                logger.info(
                    "random search: candidate %d (%s) scored %.2f (best %.2f)",
                    seed,
                    label,
                    outcome.score,
                    best[0],
                )
                if self.stop_at_score is not None and outcome.score >= self.stop_at_score:
                    logger.info("random search: stop_at_score=%s reached", self.stop_at_score)
                    break
        finally:
            if bar is not None:
                bar.close()
        if not scored:
            run.warn(
                f"the LM-call budget (max_lm_calls={self.max_lm_calls}) ran out before any candidate was scored; "
                "returning the student unchanged"
            )
            return self._finish(opened, student.deepcopy(), None, None, None)
        bootstrapped = [r for r in run.done("candidate") if r["seed"] >= -1]
        if (
            self.max_bootstrapped_demos > 0
            and bootstrapped
            and not any(r["bootstrapped"] for r in bootstrapped)
        ):
            run.warn(
                "the teacher never passed the metric on any trainset example: the bootstrapped candidates "
                "hold labeled demos only"
            )
        scored.sort(key=lambda t: (-t[0], t[1]))
        self.candidate_programs = [(s, p, seed) for s, seed, p in scored]
        best_score, best_seed, best = scored[0]
        compiled = best.deepcopy()
        compiled._compiled = True
        return self._finish(opened, compiled, done.get(-3, {}).get("score"), best_score, best_seed)

    def _candidate(
        self,
        seed: int,
        student: Any,
        teacher: Any,
        trainset: list[Example],
        scorer: ProgramScorer,
        run: OptimizerRun,
        labeled_sample: bool = True,
    ) -> tuple[Any, str, int]:
        """(program, label, number of examples whose teacher run passed)."""
        if seed == -3:
            return strip_demos(student.deepcopy()), "zero-shot", 0
        if seed == -2:
            if self.max_labeled_demos == 0:
                return strip_demos(student.deepcopy()), "labeled only (max_labeled_demos=0)", 0
            if labeled_sample:
                program = attach_labeled(
                    strip_demos(student.deepcopy()), trainset, self.max_labeled_demos, seed=self.seed
                )
            else:
                program = attach_labeled(
                    strip_demos(student.deepcopy()),
                    trainset[: self.max_labeled_demos],
                    self.max_labeled_demos,
                )
            return program, f"{self.max_labeled_demos} labeled", 0
        if seed == -1:
            shuffled, size = list(trainset), self.max_bootstrapped_demos
        else:
            shuffled = list(trainset)
            # With seed=0 these draws are DSPy's (Random(seed) for the order, a fresh one for the size), so
            # both libraries try the same candidates on the same data.
            draw_seed = seed + self.seed * 1_000_003
            random.Random(draw_seed).shuffle(shuffled)
            size = random.Random(draw_seed).randint(
                min(1, self.max_bootstrapped_demos), self.max_bootstrapped_demos
            )
        bootstrapper = Bootstrapper.for_optimizer(
            self,
            max_bootstrapped_demos=size,
            max_labeled_demos=self.max_labeled_demos,
            labeled_seed=self.seed,
            scorer=scorer,
            run=run,
        )
        outcome = bootstrapper.bootstrap(student, teacher, shuffled, tag=f"candidate_{seed}")
        label = f"bootstrapped {outcome.n_passed}/{size}" + (" (shuffled)" if seed >= 0 else "")
        return outcome.program, label, outcome.n_passed

    def _finish(
        self,
        opened: OpenedCompile,
        compiled: Any,
        baseline: float | None,
        best_score: float | None,
        best_seed: int | None,
    ) -> Any:
        rows = opened.run.done("candidate")
        table = [
            {
                "trial": n,
                "seed": r["seed"],
                "candidate": r["label"],
                "score": r["score"],
                "demos": r["demos"],
                "errors": r.get("errors") or "",
                "lm_calls": r["lm_calls"],
                "best": "yes" if r["seed"] == best_seed else "",
            }
            for n, r in enumerate(rows)
        ]
        logger.info(
            "random search: best candidate %s scored %s (zero-shot %s) after %d LM calls",
            best_seed,
            best_score,
            baseline,
            opened.run.budget.calls,
        )
        return self.finish_compile(
            opened,
            compiled,
            summary={
                "score_before": baseline,
                "score_after": best_score,
                "best_seed": best_seed,
                "candidates_scored": len(rows),
                "scores": {r["seed"]: r["score"] for r in rows},
            },
            trial_rows=table,
            columns=["trial", "seed", "candidate", "score", "demos", "errors", "lm_calls", "best"],
            series={"valset score": ([r["trial"] for r in table], [r["score"] for r in table])},
            not_in_report=("scores",),
        )


def _demo_count(program: Any) -> dict[str, int]:
    return {name: len(p.demos) for name, p in program.named_predictors()}
