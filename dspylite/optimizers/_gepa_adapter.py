"""The ``gepa`` package's adapter over a dspylite program: evaluate, reflective dataset, propose texts.

A *candidate* is ``{predictor name: instruction text}``. ``evaluate`` builds the student with those
instructions and runs it on a batch (concurrently, with traces, through the optimizer's LM budget);
every finished run is kept in ``rollouts.jsonl`` keyed by (program state, example), so a resumed or
repeated evaluation replays it instead of calling the LM again. ``make_reflective_dataset`` turns the
runs into per-predictor records (inputs, outputs, the metric's feedback) and ``propose_new_texts``
asks the reflection LM, with gepa's own instruction-proposal prompt, for a new instruction; each
prompt and reply goes to ``reflections.jsonl`` and is reused on resume.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dspylite.errors import MetricError, OptimizerError
from dspylite.evaluate import check_score, example_id
from dspylite.example import Example, Prediction
from dspylite.optimizers._eval import BudgetExhausted, LMBudget, program_key, run_scored
from dspylite.trace import TraceRecord
from dspylite.utils.io import append_jsonl, read_jsonl
from dspylite.utils.parallel import parallel_map

logger = logging.getLogger(__name__)

ROLLOUTS_FILE = "rollouts.jsonl"
REFLECTIONS_FILE = "reflections.jsonl"


# ---- the metric ------------------------------------------------------------------------------------


class FeedbackMetric:
    """Calls a user metric with DSPy's GEPA arguments when it takes them, else ``(gold, pred, trace)``.

    Returns ``(score, feedback or None)``; a metric may return a number, a bool, or anything with
    ``score`` (and optionally ``feedback``), e.g. ``Prediction(score=..., feedback=...)``.
    """

    def __init__(self, metric: Callable[..., Any]):
        self.metric = metric
        try:
            inspect.signature(metric).bind(None, None, None, None, None)
            self.takes_feedback_args = True
        except (TypeError, ValueError):
            self.takes_feedback_args = False

    def __call__(
        self,
        gold: Example,
        pred: Any,
        trace: Any = None,
        pred_name: str | None = None,
        pred_trace: Any = None,
    ) -> tuple[float, str | None]:
        if self.takes_feedback_args:
            raw = self.metric(gold, pred, trace, pred_name, pred_trace)
        else:
            raw = self.metric(gold, pred, trace)
        return split_score(raw)


def split_score(raw: Any) -> tuple[float, str | None]:
    if isinstance(raw, (Prediction, dict)) and "score" in raw:
        feedback = raw.get("feedback") if hasattr(raw, "get") else None
        return check_score(raw["score"]), (str(feedback) if feedback is not None else None)
    if not isinstance(raw, (int, float, bool)) and hasattr(raw, "score"):
        feedback = getattr(raw, "feedback", None)
        return check_score(raw.score), (str(feedback) if feedback is not None else None)
    return check_score(raw), None


# ---- programs from candidates ------------------------------------------------------------------------


def seed_candidate(program: Any) -> dict[str, str]:
    return {name: predictor.signature.instructions for name, predictor in program.named_predictors()}


def build_program(student: Any, candidate: Mapping[str, str]) -> Any:
    """A copy of ``student`` whose predictors carry the candidate's instructions (the student is untouched)."""
    program = student.deepcopy()
    names = dict(program.named_predictors())
    unknown = sorted(set(candidate) - set(names))
    if unknown:
        raise OptimizerError(
            f"GEPA candidate names predictor(s) {unknown} that the program does not have ({sorted(names)})"
        )
    for name, text in candidate.items():
        predictor = names[name]
        if predictor.signature.instructions != text:
            predictor.signature = predictor.signature.with_instructions(text)
    return program


# ---- the reflection LM --------------------------------------------------------------------------------


def ask_reflection_lm(lm: Any, prompt: str) -> str:
    """The text of one reply from any dspylite LM (``generate(messages)``) or a plain callable."""
    if hasattr(lm, "generate"):
        completions = lm.generate([{"role": "user", "content": prompt}])
        if not completions:
            raise OptimizerError(f"the reflection LM {getattr(lm, 'model', lm)!r} returned no completion")
        return completions[0].text
    reply = lm(prompt)
    if isinstance(reply, list):
        reply = reply[0] if reply else ""
    return str(reply)


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:24]


# ---- the adapter -------------------------------------------------------------------------------------


class ProgramAdapter:
    """gepa's ``GEPAAdapter`` protocol over a dspylite program (see the module docstring)."""

    def __init__(
        self,
        student: Any,
        metric: Callable[..., Any],
        *,
        reflection_lm: Any,
        budget: LMBudget,
        num_threads: int,
        failure_score: float,
        add_format_failure_as_feedback: bool,
        rng: random.Random,
        search: Any = None,
        run_path: Path | None = None,
        reflection_prompt_template: str | None = None,
        on_reflection: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.student = student
        self.metric = FeedbackMetric(metric)
        # An LM object is wrapped so its requests count; a plain callable (prompt -> text, as dspy.GEPA
        # also accepts) is charged by hand in propose_new_texts.
        self.reflection_lm = (
            budget.wrap(reflection_lm) if hasattr(reflection_lm, "generate") else reflection_lm
        )
        self.budget = budget
        self.num_threads = max(1, int(num_threads))
        self.failure_score = failure_score
        self.add_format_failure_as_feedback = add_format_failure_as_feedback
        self.rng = rng
        self.search = search
        self.reflection_prompt_template = reflection_prompt_template
        self.on_reflection = on_reflection
        self._lock = threading.Lock()
        self.metric_calls = 0  # program-level metric calls that ran (cache replays excluded)
        self.error_counts: dict[str, int] = {}
        self.reflection_calls = 0
        self._rollouts_path = run_path / ROLLOUTS_FILE if run_path is not None else None
        self._reflections_path = run_path / REFLECTIONS_FILE if run_path is not None else None
        self._rollouts: dict[str, dict[str, Any]] = {}
        self._replies: dict[str, str] = {}
        if self._rollouts_path is not None:
            for row in read_jsonl(self._rollouts_path):
                if "key" in row:
                    self._rollouts[row["key"]] = row
        if self._reflections_path is not None:
            for row in read_jsonl(self._reflections_path):
                if "prompt_hash" in row and "reply" in row:
                    self._replies[row["prompt_hash"]] = row["reply"]
        self.replayed_rollouts = 0
        self.replayed_reflections = 0

    # gepa looks this attribute up to decide who proposes texts; a bound method means "the adapter".
    def propose_new_texts(
        self,
        candidate: dict[str, str],
        reflective_dataset: Mapping[str, Sequence[Mapping[str, Any]]],
        components_to_update: list[str],
    ) -> dict[str, str]:
        from gepa.strategies.instruction_proposal import InstructionProposalSignature

        new_texts: dict[str, str] = {}
        for name in components_to_update:
            records = list(reflective_dataset.get(name, []))
            if not records:
                continue
            prompt = InstructionProposalSignature.prompt_renderer(
                {
                    "current_instruction_doc": candidate[name],
                    "dataset_with_feedback": records,
                    "prompt_template": self.reflection_prompt_template,
                }
            )
            if not isinstance(prompt, str):  # gepa returns chat messages only when images are involved
                raise OptimizerError("GEPA: multimodal reflection prompts are not supported by dspylite")
            key = prompt_hash(prompt)
            reply = self._replies.get(key)
            replayed = reply is not None
            if reply is None:
                if not hasattr(self.reflection_lm, "generate"):
                    self.budget.charge()
                reply = ask_reflection_lm(self.reflection_lm, prompt)
                with self._lock:
                    self.reflection_calls += 1
            else:
                self.replayed_reflections += 1
            text = InstructionProposalSignature.output_extractor(reply)["new_instruction"].strip()
            if not text:
                text = candidate[name]  # an empty proposal would erase the instruction; keep the parent's
            row = {
                "prompt_hash": key,
                "component": name,
                "parent_instruction": candidate[name],
                "prompt": prompt,
                "reply": reply,
                "new_instruction": text,
                "replayed": replayed,
            }
            if not replayed:
                self._replies[key] = reply
                if self._reflections_path is not None:
                    append_jsonl(self._reflections_path, row)
            if self.on_reflection is not None:
                self.on_reflection(row)
            new_texts[name] = text
        return new_texts

    # ---- evaluate --------------------------------------------------------------------------------
    def evaluate(self, batch: list[Example], candidate: dict[str, str], capture_traces: bool = False) -> Any:
        from gepa.core.adapter import EvaluationBatch

        program = build_program(self.student, candidate)
        key = program_key(program)
        rows: list[dict[str, Any] | None] = [self._rollouts.get(f"{key}:{example_id(ex)}") for ex in batch]
        todo = [i for i, row in enumerate(rows) if row is None]
        self.replayed_rollouts += len(batch) - len(todo)
        if todo:
            runnable = program.deepcopy()
            for predictor in runnable.predictors():
                if predictor.lm is not None:
                    predictor.lm = self.budget.wrap(predictor.lm)

            def run_one(i: int) -> dict[str, Any] | None:
                if self.budget.exhausted:
                    return None
                return self._run(runnable, key, batch[i])

            with self.budget.counting_settings():
                outcomes = parallel_map(run_one, todo, num_threads=self.num_threads)
            cut_short = False
            for outcome, i in zip(outcomes, todo, strict=True):
                if outcome.error is not None:
                    raise outcome.error  # MetricError or a bug: systemic, gepa stops
                if outcome.value is None:
                    cut_short = True
                    continue
                rows[i] = outcome.value
            if cut_short:
                # A partial batch would give gepa scores that mean nothing; stop the search here. The
                # finished runs are already on disk, so a resume with more budget replays them.
                raise BudgetExhausted(
                    f"the LM-call budget (max_lm_calls={self.budget.max_calls}) ran out during a GEPA evaluation"
                )
        scores = [float(row["score"]) for row in rows]  # type: ignore[index]
        outputs = [row.get("outputs") for row in rows]  # type: ignore[union-attr]
        trajectories = (
            [dict(row, example=ex) for row, ex in zip(rows, batch, strict=True)] if capture_traces else None
        )  # type: ignore[arg-type]
        return EvaluationBatch(outputs=outputs, scores=scores, trajectories=trajectories)

    def _run(self, runnable: Any, key: str, example: Example) -> dict[str, Any] | None:
        # run_scored runs the program and labels failures; the metric is called here instead (with
        # DSPy's feedback arguments), so a placeholder stands in for it there.
        run = run_scored(runnable, example, lambda *_a: 0.0, failure_score=self.failure_score)
        if run.budget_hit or (run.error_kind is not None and self.budget.exhausted):
            return None
        score, feedback, error_kind, error = run.score, None, run.error_kind, run.error
        if run.prediction is not None:
            try:
                with self._lock:
                    self.metric_calls += 1
                score, feedback = self.metric(example, run.prediction, list(run.traces), None, None)
            except MetricError:
                raise
            except Exception as exc:  # counted and shown to the reflection LM, never silently zero
                score, error_kind, error = self.failure_score, "metric", f"{type(exc).__name__}: {exc}"
        if error_kind is not None:
            with self._lock:
                self.error_counts[error_kind] = self.error_counts.get(error_kind, 0) + 1
        row = {
            "key": f"{key}:{example_id(example)}",
            "program": key,
            "example_id": example_id(example),
            "score": score,
            "feedback": feedback,
            "error_kind": error_kind,
            "error": error,
            "outputs": dict(run.prediction.items()) if run.prediction is not None else None,
            "traces": [_trace_row(t) for t in run.traces],
        }
        row = json.loads(json.dumps(row, default=str))
        with self._lock:
            self._rollouts[row["key"]] = row
            if self._rollouts_path is not None:
                append_jsonl(self._rollouts_path, row)
        return row

    # ---- the reflective dataset ------------------------------------------------------------------
    def make_reflective_dataset(
        self, candidate: dict[str, str], eval_batch: Any, components_to_update: list[str]
    ) -> dict[str, list[dict[str, Any]]]:
        dataset: dict[str, list[dict[str, Any]]] = {}
        for name in components_to_update:
            records: list[dict[str, Any]] = []
            for traj in eval_batch.trajectories or []:
                calls = [t for t in traj["traces"] if t["predictor_name"] == name]
                if not calls:
                    continue
                # One call per example keeps the prompt short (DSPy samples one too); seeded, so reproducible.
                failed = [t for t in calls if t.get("error")]
                call = failed[0] if failed else calls[self.rng.randrange(len(calls))]
                if call.get("error") and not self.add_format_failure_as_feedback and not call.get("outputs"):
                    outputs: Any = f"Couldn't parse the output as per the expected output format. Raw reply: {call['completion']}"
                else:
                    outputs = call.get("outputs") or call.get("completion")
                records.append(
                    {
                        "Inputs": call["inputs"],
                        "Generated Outputs": outputs,
                        "Feedback": self._feedback_for(name, traj, call),
                    }
                )
            if records:
                dataset[name] = records
        if not dataset:
            raise OptimizerError(
                f"GEPA: no trace of predictor(s) {components_to_update} in the minibatch runs; "
                "the program never called them"
            )
        return dataset

    def _feedback_for(self, name: str, traj: dict[str, Any], call: dict[str, Any]) -> str:
        example: Example = traj["example"]
        if traj.get("error_kind") not in (None, "metric") and traj.get("outputs") is None:
            return (
                f"The program failed ({traj['error_kind']}: {traj.get('error')}); score {traj['score']}. "
                f"Expected: {_labels(example)}."
            )
        pred = Prediction(**(traj.get("outputs") or {}))
        traces = [TraceRecord.from_dict(t) for t in traj["traces"]]
        pred_trace = [t for t in traces if t.predictor_name == name]
        try:
            score, feedback = self.metric(example, pred, traces, name, pred_trace)
        except MetricError:
            raise
        except Exception as exc:
            return (
                f"The metric failed on this run ({type(exc).__name__}: {exc}). Expected: {_labels(example)}."
            )
        if feedback is None:
            # A metric without feedback: the score and the labels are what the reflection LM sees.
            return f"This trajectory got a score of {score}. Expected: {_labels(example)}."
        return feedback

    # ---- resume state (gepa snapshots it into its checkpoint) ------------------------------------
    def get_adapter_state(self) -> dict[str, Any]:
        return self.search.snapshot() if self.search is not None else {}

    def set_adapter_state(self, state: dict[str, Any]) -> None:
        """Restore the search's random stream, minibatch order and merge schedule (see _gepa_engine)."""
        if self.search is not None:
            self.search.restore(state)


def _trace_row(trace: TraceRecord) -> dict[str, Any]:
    """What reflection needs from a trace (token ids and logprobs stay out of the run directory)."""
    data = trace.to_dict()
    for key in ("prompt_token_ids", "completion_token_ids", "logprobs"):
        data.pop(key, None)
    return data


def _labels(example: Example) -> str:
    try:
        labels = example.labels().toDict()
    except Exception:
        labels = example.toDict()
    return json.dumps(labels, ensure_ascii=False, default=str)
