"""GEPA: reflective prompt evolution from natural-language feedback, with DSPy's names and call shape.

    gepa = GEPA(metric, reflection_lm=big_lm, auto="light")          # or max_metric_calls=...
    compiled = gepa.compile(program, trainset=train, valset=dev)

The search engine is the ``gepa`` package (its ``GEPAEngine``, assembled as ``gepa.optimize`` does, in
``_gepa_engine``): per validation example it keeps the best
candidate seen (the Pareto frontier), picks a parent from it, runs the parent on a minibatch of the
trainset, shows the reflection LM one predictor's inputs, outputs and the metric's feedback, and keeps
the rewritten instruction only if the minibatch score strictly improves; accepted candidates are scored
on the whole valset, and with ``use_merge`` two lineages' predictors can be merged. dspylite supplies
the adapter (``_gepa_adapter.ProgramAdapter``): programs, traces, budget, caches.

What dspylite adds to ``dspy.GEPA``:

- A hard budget. ``max_metric_calls`` (or ``auto``) is stated before the run (log line and
  ``budget.json``) and is never exceeded: an iteration starts only when its worst case (two
  minibatches plus a full valset evaluation) still fits. ``max_lm_calls`` caps task + reflection LM
  requests; the search stops cleanly when it runs out.
- A run directory (``run_dir=``, or DSPy's ``log_dir=``): ``trials.jsonl`` (one row per iteration:
  parent, component, minibatch ids, minibatch score before/after, accepted or why not, new candidate,
  val score), ``candidates.json`` (every candidate, its parents, per-example val scores, the metric
  calls spent when it was found), ``frontier.json``, ``reflections.jsonl`` (each reflection prompt and
  reply), ``rollouts.jsonl`` (every program run: outputs, score, feedback, trace), ``program.json``,
  ``report.md`` + ``report.png`` (frontier, candidates, score-vs-budget curve). gepa's own
  checkpoint lives in ``gepa/`` (gepa pickles it; everything a user reads is JSON).
- Resume: compiling again with the same run directory continues from gepa's last checkpoint; the
  runs and reflection replies of the interrupted iteration are replayed from the run directory, and
  the random stream, minibatch order and merge schedule are restored, so nothing is paid twice and
  the resumed search draws exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import logging
import math
import random
import tempfile
from pathlib import Path
from typing import Any, Literal

from dspylite.errors import OptimizerError
from dspylite.example import Example
from dspylite.optimizers._compile import PromptOptimizer
from dspylite.optimizers._eval import BudgetExhausted, check_metric, check_positive
from dspylite.optimizers._gepa_adapter import ProgramAdapter, build_program, seed_candidate
from dspylite.optimizers._gepa_engine import CheckpointedSearch, build_engine
from dspylite.optimizers._run import OptimizerRun, fingerprint_value
from dspylite.reporting import line_plot, markdown_table
from dspylite.run_dir import RunDir

logger = logging.getLogger(__name__)

AUTO_RUN_SETTINGS = {"light": {"n": 6}, "medium": {"n": 12}, "heavy": {"n": 18}}
MERGE_SUBSAMPLE = 5  # gepa's MergeProposer scores a merged candidate on up to 5 val examples first
BUDGET_FILE = "budget.json"
CANDIDATES_FILE = "candidates.json"
FRONTIER_FILE = "frontier.json"
GEPA_STATE_DIR = "gepa"


def auto_budget(
    num_preds: int, num_candidates: int, valset_size: int, minibatch_size: int = 35, full_eval_steps: int = 5
) -> int:
    """DSPy's ``GEPA.auto_budget``: metric calls for ``auto=light|medium|heavy`` (same numbers as dspy.GEPA)."""
    num_trials = int(max(2 * (num_preds * 2) * math.log2(num_candidates), 1.5 * num_candidates))
    total = valset_size + num_candidates * 5 + num_trials * minibatch_size
    if num_trials == 0:
        return total
    periodic_fulls = (num_trials + 1) // full_eval_steps + 1
    extra_final = 1 if num_trials < full_eval_steps else 0
    return total + (periodic_fulls + extra_final) * valset_size


class GEPA(PromptOptimizer):
    def __init__(
        self,
        metric: Any,
        *,
        auto: Literal["light", "medium", "heavy"] | None = None,
        max_full_evals: int | None = None,
        max_metric_calls: int | None = None,
        reflection_minibatch_size: int = 3,
        candidate_selection_strategy: Literal["pareto", "current_best"] = "pareto",
        reflection_lm: Any = None,
        skip_perfect_score: bool = True,
        add_format_failure_as_feedback: bool = False,
        component_selector: str = "round_robin",
        use_merge: bool = True,
        max_merge_invocations: int | None = 5,
        num_threads: int | None = None,
        failure_score: float = 0.0,
        perfect_score: float = 1.0,
        log_dir: str | None = None,
        track_stats: bool = False,
        seed: int | None = 0,
        reflection_prompt_template: str | None = None,
        # dspylite's additions
        max_lm_calls: int | None = None,
        run_dir: str | Path | RunDir | None = None,
        progress: bool = True,
    ):
        check_metric(metric, "GEPA")
        if (auto is not None) + (max_full_evals is not None) + (max_metric_calls is not None) != 1:
            raise OptimizerError(
                "GEPA needs exactly one budget: auto='light'|'medium'|'heavy', max_full_evals=N or "
                f"max_metric_calls=N (got auto={auto!r}, max_full_evals={max_full_evals!r}, "
                f"max_metric_calls={max_metric_calls!r})"
            )
        if auto is not None and auto not in AUTO_RUN_SETTINGS:
            raise OptimizerError(f"GEPA auto must be one of {sorted(AUTO_RUN_SETTINGS)}, got {auto!r}")
        if reflection_lm is None:
            raise OptimizerError(
                "GEPA needs reflection_lm=an LM that rewrites instructions from feedback (any dspylite.LM; "
                "it may be a different, larger model on another endpoint than the task LM)"
            )
        if candidate_selection_strategy not in ("pareto", "current_best"):
            raise OptimizerError(
                "GEPA candidate_selection_strategy must be 'pareto' or 'current_best', "
                f"got {candidate_selection_strategy!r}"
            )
        if component_selector not in ("round_robin", "all"):
            raise OptimizerError(
                f"GEPA component_selector must be 'round_robin' or 'all', got {component_selector!r}"
            )
        if run_dir is not None and log_dir is not None and str(run_dir) != str(log_dir):
            raise OptimizerError("GEPA: give run_dir= or log_dir= (DSPy's name for it), not both")
        if reflection_prompt_template is not None:
            missing = [p for p in ("<curr_param>", "<side_info>") if p not in reflection_prompt_template]
            if missing:
                raise OptimizerError(
                    f"GEPA reflection_prompt_template lacks the placeholder(s) {missing}: <curr_param> becomes "
                    "the current instruction, <side_info> the examples with their feedback"
                )
        check_positive(max_full_evals, "max_full_evals")
        check_positive(max_metric_calls, "max_metric_calls")
        check_positive(reflection_minibatch_size, "reflection_minibatch_size")
        check_positive(num_threads, "num_threads")
        check_positive(max_lm_calls, "max_lm_calls")
        check_positive(max_merge_invocations, "max_merge_invocations", allow_zero=True)
        self.metric = metric
        self.auto = auto
        self.max_full_evals = max_full_evals
        self.max_metric_calls = max_metric_calls
        self.reflection_minibatch_size = reflection_minibatch_size
        self.candidate_selection_strategy = candidate_selection_strategy
        self.reflection_lm = reflection_lm
        self.skip_perfect_score = skip_perfect_score
        self.add_format_failure_as_feedback = add_format_failure_as_feedback
        self.component_selector = component_selector
        self.use_merge = use_merge
        self.max_merge_invocations = max_merge_invocations if max_merge_invocations is not None else 5
        self.num_threads = num_threads or 8
        self.failure_score = failure_score
        self.perfect_score = perfect_score
        self.track_stats = track_stats
        self.seed = 0 if seed is None else seed
        self.reflection_prompt_template = reflection_prompt_template
        self.max_lm_calls = max_lm_calls
        self.run_dir = run_dir if run_dir is not None else log_dir
        self.progress = progress
        self.summary: dict[str, Any] = {}
        self.candidates: list[dict[str, Any]] = []
        self.frontier: list[dict[str, Any]] = []

    # ---- budget ---------------------------------------------------------------------------------
    def metric_call_budget(self, student: Any, trainset: list[Example], valset: list[Example]) -> int:
        if self.auto is not None:
            return auto_budget(
                num_preds=len(student.predictors()),
                num_candidates=AUTO_RUN_SETTINGS[self.auto]["n"],
                valset_size=len(valset),
            )
        if self.max_full_evals is not None:
            return self.max_full_evals * (len(trainset) + len(valset))
        return int(self.max_metric_calls)

    def worst_case_iteration(self, valset_size: int) -> int:
        """Metric calls one iteration may spend: parent + child minibatches (or a merge subsample) and a full val pass."""
        explore = 2 * self.reflection_minibatch_size
        if self.use_merge:
            explore = max(explore, MERGE_SUBSAMPLE)
        return explore + valset_size

    def _options(self) -> dict[str, Any]:
        return {
            "auto": self.auto,
            "max_full_evals": self.max_full_evals,
            "max_metric_calls": self.max_metric_calls,
            "reflection_minibatch_size": self.reflection_minibatch_size,
            "candidate_selection_strategy": self.candidate_selection_strategy,
            "reflection_lm": fingerprint_value(self.reflection_lm),
            "skip_perfect_score": self.skip_perfect_score,
            "add_format_failure_as_feedback": self.add_format_failure_as_feedback,
            "component_selector": self.component_selector,
            "use_merge": self.use_merge,
            "max_merge_invocations": self.max_merge_invocations,
            "failure_score": self.failure_score,
            "perfect_score": self.perfect_score,
            "seed": self.seed,
            "reflection_prompt_template": self.reflection_prompt_template,
        }

    # ---- compile --------------------------------------------------------------------------------
    def compile(
        self,
        student: Any,
        *,
        trainset: list[Example],
        valset: list[Example] | None = None,
        teacher: Any = None,
    ) -> Any:
        """A new program with the best instructions found (the student is not changed)."""
        from gepa.strategies.batch_sampler import EpochShuffledBatchSampler

        if teacher is not None:
            raise OptimizerError("GEPA does not use a teacher program (as in DSPy); pass teacher=None")
        if valset is None:
            logger.warning("GEPA: no valset given; the trainset is used for the Pareto frontier too")
        trainset, valset = self.checked_data(student, trainset, valset, valset_from_trainset=True)
        budget_calls = self.metric_call_budget(student, trainset, valset)
        worst = self.worst_case_iteration(len(valset))
        if budget_calls < len(valset) + worst:
            raise OptimizerError(
                f"GEPA budget of {budget_calls} metric calls cannot pay for the seed's valset evaluation "
                f"({len(valset)}) plus one iteration (up to {worst}); raise max_metric_calls to at least "
                f"{len(valset) + worst} or use a smaller valset"
            )
        max_iterations = (budget_calls - len(valset)) // (2 * self.reflection_minibatch_size)
        run = self.start_run(
            student, trainset, valset, None, {**self._options(), "metric_call_budget": budget_calls}
        ).run
        budget_info = {
            "max_metric_calls": budget_calls,
            "source": f"auto={self.auto}"
            if self.auto
            else (f"max_full_evals={self.max_full_evals}" if self.max_full_evals else "max_metric_calls"),
            "full_evals_equivalent": round(budget_calls / (len(trainset) + len(valset)), 2),
            "worst_case_iteration": worst,
            "max_lm_calls": self.max_lm_calls,
            # Without a cache and with one LM call per predictor per run (no loops): task calls plus
            # at most one reflection per iteration per updated predictor.
            "lm_calls_estimate": budget_calls * len(student.predictors())
            + max_iterations * (len(student.predictors()) if self.component_selector == "all" else 1),
            "trainset": len(trainset),
            "valset": len(valset),
        }
        run.save_json(BUDGET_FILE, budget_info)
        logger.info(
            "GEPA: budget %d metric calls (%s; %.2f full evals of train+val; an iteration starts only if its "
            "worst case of %d calls still fits), max_lm_calls=%s (task + reflection LM; about %d LM calls "
            "expected at one call per predictor and no cache)",
            budget_calls,
            budget_info["source"],
            budget_info["full_evals_equivalent"],
            worst,
            self.max_lm_calls,
            budget_info["lm_calls_estimate"],
        )

        rng = random.Random(self.seed)
        search = CheckpointedSearch(
            rng, EpochShuffledBatchSampler(minibatch_size=self.reflection_minibatch_size, rng=rng)
        )
        recorder = _Recorder(run)
        adapter = ProgramAdapter(
            student,
            self.metric,
            reflection_lm=self.reflection_lm,
            budget=run.budget,
            num_threads=self.num_threads,
            failure_score=self.failure_score,
            add_format_failure_as_feedback=self.add_format_failure_as_feedback,
            rng=rng,
            search=search,
            run_path=run.dir.path if run.dir is not None else None,
            reflection_prompt_template=self.reflection_prompt_template,
            on_reflection=recorder.on_reflection,
        )
        tmp = tempfile.TemporaryDirectory(prefix="dspylite-gepa-") if run.dir is None else None
        gepa_dir = Path(tmp.name) if tmp is not None else run.dir.path / GEPA_STATE_DIR
        gepa_dir.mkdir(parents=True, exist_ok=True)
        stopper = _WorstCaseBudgetStopper(budget_calls, worst, run)
        try:
            try:
                engine = build_engine(
                    adapter=adapter,
                    search=search,
                    seed_candidate=seed_candidate(student),
                    trainset=trainset,
                    valset=valset,
                    candidate_selection_strategy=self.candidate_selection_strategy,
                    component_selector=self.component_selector,
                    skip_perfect_score=self.skip_perfect_score,
                    perfect_score=self.perfect_score,
                    use_merge=self.use_merge,
                    max_merge_invocations=self.max_merge_invocations,
                    stoppers=[stopper],
                    run_dir=str(gepa_dir),
                    logger=_GepaLog(),
                    callbacks=[recorder],
                    seed=self.seed,
                    progress=self.progress,
                )
                with engine.experiment_tracker:
                    engine.run()
            except BudgetExhausted:
                run.warn(
                    f"the LM-call budget (max_lm_calls={self.max_lm_calls}) ran out; the search stopped at its last "
                    "completed iteration"
                )
            state = _load_state(gepa_dir)
            if state is None:
                run.warn(
                    "no GEPA iteration finished (the seed's valset evaluation was cut short); student returned"
                )
                compiled = student.deepcopy()
                self._report(run, adapter, None, budget_info)
                return compiled
            compiled = self._finish(run, adapter, state, student, budget_info)
        finally:
            if tmp is not None:
                tmp.cleanup()
        return compiled

    def _finish(
        self,
        run: OptimizerRun,
        adapter: ProgramAdapter,
        state: Any,
        student: Any,
        budget_info: dict[str, Any],
    ) -> Any:
        candidates = candidate_rows(state)
        self.candidates = candidates
        self.frontier = frontier_rows(state)
        run.save_json(CANDIDATES_FILE, candidates)
        run.save_json(FRONTIER_FILE, self.frontier)
        scores = [c["val_score"] for c in candidates]
        best_idx = max(range(len(scores)), key=lambda i: (scores[i], -i))
        compiled = build_program(student, state.program_candidates[best_idx])
        compiled._compiled = True
        for c in candidates:
            run.save_candidate(
                f"candidate_{c['idx']}", build_program(student, state.program_candidates[c["idx"]])
            )
        run.save_program(compiled)
        if self.track_stats:
            compiled.detailed_results = {
                "candidates": candidates,
                "frontier": self.frontier,
                "best_idx": best_idx,
                "val_aggregate_scores": scores,
            }
        self._report(run, adapter, state, budget_info, best_idx=best_idx)
        return compiled

    def _report(
        self,
        run: OptimizerRun,
        adapter: ProgramAdapter,
        state: Any,
        budget_info: dict[str, Any],
        best_idx: int | None = None,
    ) -> None:
        iterations = iteration_rows(run)
        candidates = self.candidates if state is not None else []
        metric_calls = int(state.total_num_evals) if state is not None else 0
        self.summary = {
            "optimizer": "GEPA",
            "score_before": candidates[0]["val_score"] if candidates else None,
            "score_after": candidates[best_idx]["val_score"] if candidates and best_idx is not None else None,
            "best_candidate": best_idx,
            "candidates": len(candidates),
            "iterations": len(iterations),
            "accepted": sum(1 for r in iterations if r.get("accepted")),
            "merges_accepted": sum(1 for r in iterations if r.get("tag") == "merge" and r.get("accepted")),
            "metric_calls": metric_calls,
            "max_metric_calls": budget_info["max_metric_calls"],
            "metric_calls_run": adapter.metric_calls,
            "rollouts_replayed": adapter.replayed_rollouts,
            "reflection_lm_calls": adapter.reflection_calls,
            "reflections_replayed": adapter.replayed_reflections,
            "frontier_candidates": sorted({i for row in self.frontier for i in row["candidates"]}),
            "errors": dict(adapter.error_counts),
            **{k: v for k, v in run.budget.summary().items()},
            "resumed": run.resumed,
            "wall_s": run.elapsed_s,
            "warnings": list(run.warnings),
        }
        logger.info(
            "GEPA: best candidate %s scored %s on the valset (seed %s); %d candidates, %d metric calls of %d, "
            "%d LM calls (%d reflection)",
            best_idx,
            self.summary["score_after"],
            self.summary["score_before"],
            len(candidates),
            metric_calls,
            budget_info["max_metric_calls"],
            run.budget.calls,
            adapter.reflection_calls,
        )
        if run.dir is None:
            return
        write_report(run, self.summary, candidates, self.frontier, iterations)


# ---- gepa hooks ----------------------------------------------------------------------------------------


class _GepaLog:
    """gepa's logger protocol, into ``logging`` (libraries never print)."""

    def log(self, message: str) -> None:
        logger.debug("gepa: %s", message)


class _WorstCaseBudgetStopper:
    """Stops gepa before an iteration whose worst case would overrun ``max_metric_calls``.

    gepa's own stopper only checks between iterations, so an iteration that starts just under the
    budget can end well over it (a full valset pass); this one never lets that happen.
    """

    def __init__(self, max_metric_calls: int, worst_case: int, run: OptimizerRun):
        self.max_metric_calls = max_metric_calls
        self.worst_case = worst_case
        self.run = run

    def __call__(self, gepa_state: Any) -> bool:
        if self.run.budget.exhausted:
            return True
        return gepa_state.total_num_evals + self.worst_case > self.max_metric_calls


class _Recorder:
    """gepa callbacks -> one trials.jsonl row per iteration (parent, minibatch, scores, verdict)."""

    def __init__(self, run: OptimizerRun):
        self.run = run
        self.row: dict[str, Any] | None = None

    def _current(self, iteration: int) -> dict[str, Any]:
        if self.row is None or self.row.get("iteration") != iteration:
            self.row = {"kind": "iteration", "iteration": iteration, "tag": "reflective", "evals": []}
        return self.row

    def on_iteration_start(self, event: dict[str, Any]) -> None:
        self.row = None
        self._current(event["iteration"])

    def on_candidate_selected(self, event: dict[str, Any]) -> None:
        row = self._current(event["iteration"])
        row["parents"] = [event["candidate_idx"]]
        row["parent_val_score"] = round(100.0 * float(event["score"]), 2)

    def on_minibatch_sampled(self, event: dict[str, Any]) -> None:
        self._current(event["iteration"])["minibatch"] = list(event["minibatch_ids"])

    def on_evaluation_end(self, event: dict[str, Any]) -> None:
        self._current(event["iteration"])["evals"].append(round(sum(event["scores"]), 4))

    def on_evaluation_skipped(self, event: dict[str, Any]) -> None:
        row = self._current(event["iteration"])
        row["accepted"] = False
        row["reason"] = f"skipped: {event['reason']}"

    def on_reflection(self, reflection: dict[str, Any]) -> None:
        if self.row is not None:
            self.row.setdefault("components", []).append(reflection["component"])
            self.row.setdefault("reflections", []).append(reflection["prompt_hash"])
            self.row.setdefault("new_instructions", {})[reflection["component"]] = reflection[
                "new_instruction"
            ]

    def on_candidate_accepted(self, event: dict[str, Any]) -> None:
        row = self._current(event["iteration"])
        row["accepted"] = True
        row["new_candidate"] = event["new_candidate_idx"]
        row["parents"] = list(event["parent_ids"])

    def on_candidate_rejected(self, event: dict[str, Any]) -> None:
        row = self._current(event["iteration"])
        row["accepted"] = False
        row["reason"] = event["reason"]

    def on_merge_attempted(self, event: dict[str, Any]) -> None:
        row = self._current(event["iteration"])
        row["tag"] = "merge"
        row["parents"] = list(event["parent_ids"])

    def on_merge_rejected(self, event: dict[str, Any]) -> None:
        row = self._current(event["iteration"])
        row["accepted"] = False
        row["reason"] = event["reason"]

    def on_valset_evaluated(self, event: dict[str, Any]) -> None:
        if event["iteration"] == 0:
            return  # the seed's evaluation (repeated by gepa on resume); candidates.json has it
        row = self._current(event["iteration"])
        row["new_candidate"] = event["candidate_idx"]
        row["val_score"] = round(100.0 * float(event["average_score"]), 2)

    def on_iteration_end(self, event: dict[str, Any]) -> None:
        row = self._current(event["iteration"])
        evals = row.pop("evals", [])
        if row.get("tag") == "merge":
            row["subsample_after"] = evals[0] if evals else None
        else:
            row["minibatch_before"] = evals[0] if evals else None
            row["minibatch_after"] = evals[1] if len(evals) > 1 else None
        row.setdefault("accepted", bool(event.get("proposal_accepted")))
        if row["accepted"] and row.get("val_score") is not None:
            row["score"] = row["val_score"]  # OptimizerRun.record logs it to metrics.jsonl
        if not row["accepted"] and "reason" not in row and row.get("tag") == "reflective":
            row["reason"] = (
                "no proposal (no call of the selected predictor in the minibatch, or reflection failed)"
            )
        row["metric_calls"] = int(event["state"].total_num_evals)
        self.run.record(row)
        state = event["state"]
        self.run.save_json(CANDIDATES_FILE, candidate_rows(state))
        self.run.save_json(FRONTIER_FILE, frontier_rows(state))
        self.row = None


def _load_state(gepa_dir: Path) -> Any:
    from gepa.core.state import GEPAState

    if not (gepa_dir / "gepa_state.bin").exists():
        return None
    return GEPAState.load(str(gepa_dir))


# ---- what the run directory and the report hold --------------------------------------------------------


def candidate_rows(state: Any) -> list[dict[str, Any]]:
    """Every candidate: instructions, parents, val score (percent), per-example val scores, when it was found."""
    front = state.get_pareto_front_mapping()
    on_front = {i for members in front.values() for i in members}
    rows = []
    for idx, candidate in enumerate(state.program_candidates):
        subscores = state.prog_candidate_val_subscores[idx]
        mean = sum(subscores.values()) / len(subscores) if subscores else 0.0
        rows.append(
            {
                "idx": idx,
                "parents": [p for p in state.parent_program_for_candidate[idx] if p is not None],
                "val_score": round(100.0 * mean, 2),
                "val_subscores": {str(k): v for k, v in sorted(subscores.items())},
                "found_at_metric_calls": int(state.num_metric_calls_by_discovery[idx]),
                "on_frontier": idx in on_front,
                "instructions": dict(candidate),
            }
        )
    return rows


def frontier_rows(state: Any) -> list[dict[str, Any]]:
    """Per validation example: the best score any candidate reached, and which candidates reached it."""
    return [
        {
            "val_id": str(val_id),
            "best_score": state.pareto_front_valset[val_id],
            "candidates": sorted(state.program_at_pareto_front_valset[val_id]),
        }
        for val_id in sorted(state.pareto_front_valset)
    ]


def iteration_rows(run: OptimizerRun) -> list[dict[str, Any]]:
    """trials.jsonl's iteration rows, the last one per iteration (an interrupted iteration is redone on resume)."""
    by_iteration: dict[int, dict[str, Any]] = {}
    for row in run.done("iteration"):
        by_iteration[row["iteration"]] = row
    return [by_iteration[i] for i in sorted(by_iteration)]


def budget_curve(candidates: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Best valset score so far against the metric calls spent when each candidate was found."""
    xs, ys, best = [], [], -1.0
    for c in sorted(candidates, key=lambda c: (c["found_at_metric_calls"], c["idx"])):
        best = max(best, c["val_score"])
        xs.append(c["found_at_metric_calls"])
        ys.append(best)
    return xs, ys


def write_report(
    run: OptimizerRun,
    summary: dict[str, Any],
    candidates: list[dict[str, Any]],
    frontier: list[dict[str, Any]],
    iterations: list[dict[str, Any]],
) -> None:
    shown = {k: v for k, v in summary.items() if k not in ("warnings",)}
    sections = [("Summary", markdown_table([{"": k, "value": v} for k, v in shown.items()], ["", "value"]))]
    if run.warnings:
        sections.append(("Warnings", "\n".join(f"- **warning:** {w}" for w in run.warnings)))
    sections.append(
        (
            "Pareto frontier (per validation example: best score and the candidates reaching it)",
            markdown_table(
                [
                    {"val example": r["val_id"], "best score": r["best_score"], "candidates": r["candidates"]}
                    for r in frontier
                ],
                ["val example", "best score", "candidates"],
            ),
        )
    )
    sections.append(
        (
            "Candidates",
            markdown_table(
                [
                    {
                        "idx": c["idx"],
                        "parents": c["parents"],
                        "val score": c["val_score"],
                        "found at metric calls": c["found_at_metric_calls"],
                        "on frontier": "yes" if c["on_frontier"] else "",
                        "instructions": " / ".join(f"{k}: {_short(v)}" for k, v in c["instructions"].items()),
                    }
                    for c in candidates
                ],
                ["idx", "parents", "val score", "found at metric calls", "on frontier", "instructions"],
            ),
        )
    )
    sections.append(
        (
            "Iterations (reflection prompts and replies: reflections.jsonl, by hash)",
            markdown_table(
                [
                    {
                        "iter": r["iteration"],
                        "kind": r.get("tag"),
                        "parents": r.get("parents", ""),
                        "component": ",".join(r.get("components", [])),
                        "minibatch": r.get("minibatch", ""),
                        "before": r.get("minibatch_before", ""),
                        "after": r.get("minibatch_after", r.get("subsample_after", "")),
                        "accepted": "yes" if r.get("accepted") else (r.get("reason") or "no"),
                        "new": r.get("new_candidate", "") if r.get("accepted") else "",
                        "val score": r.get("val_score", "") if r.get("accepted") else "",
                        "metric calls": r.get("metric_calls"),
                        "lm calls": r.get("lm_calls"),
                    }
                    for r in iterations
                ],
                [
                    "iter",
                    "kind",
                    "parents",
                    "component",
                    "minibatch",
                    "before",
                    "after",
                    "accepted",
                    "new",
                    "val score",
                    "metric calls",
                    "lm calls",
                ],
            ),
        )
    )
    figure = None
    if candidates:
        xs, ys = budget_curve(candidates)
        figure = line_plot(
            {
                "best valset score so far": (xs, ys),
                "each candidate": (
                    [c["found_at_metric_calls"] for c in candidates],
                    [c["val_score"] for c in candidates],
                ),
            },
            title="GEPA: valset score vs budget",
            xlabel="metric calls spent",
            ylabel="valset score (%)",
        )
    run.dir.write_report("GEPA report", sections, figure=figure)
    if figure is not None:
        import matplotlib.pyplot as plt

        plt.close(figure)


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
