"""Prompt optimizers against a scripted LM whose answers depend on the demos and instructions it sees.

The task: ``question = "word: apple"`` -> ``answer = "APPLE"``. The scripted LM answers correctly
(upper case) only when the prompt holds at least ``min_demos`` demos or an instruction that says
"uppercase"; otherwise it echoes the word in lower case. So a better prompt is a measurably better
program, and the tests can check that each optimizer finds it.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import dspylite as dspy
from dspylite.completion import Completion
from dspylite.errors import MetricError, OptimizerError
from dspylite.optimizers import BootstrapFewShot, BootstrapFewShotWithRandomSearch, LabeledFewShot, MIPROv2
from dspylite.optimizers._eval import CountingLM, LMBudget, ProgramScorer, ScoreCache
from dspylite.utils.io import read_jsonl

WORDS = [
    "apple",
    "berry",
    "cherry",
    "delta",
    "eagle",
    "falcon",
    "grape",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mango",
    "nectar",
    "olive",
    "papaya",
]
_WORD = re.compile(r"(?:word: |\[\[ ## word ## \]\]\n)(\w+)")


class ScriptedLM:
    """A thread-safe LM: task answers depend on demos/instructions; proposer answers on the rollout id."""

    def __init__(
        self,
        *,
        min_demos: int = 1,
        proposals: dict[int, str] | None = None,
        delay: float = 0.0,
        model: str = "scripted",
        correct_when_sampling: bool = False,
        good_words: set[str] = frozenset(),
    ):
        self.model = model
        self.min_demos = min_demos
        self.proposals = proposals or {}
        self.delay = delay
        self.correct_when_sampling = correct_when_sampling
        self.good_words = good_words
        self.calls = 0
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    def generate(
        self, messages: list[dict[str, Any]], *, n: int = 1, rollout_id: int | None = None, **kwargs: Any
    ) -> list[Completion]:
        with self._lock:
            self.calls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.requests.append({"messages": messages, "rollout_id": rollout_id, "kwargs": kwargs})
        try:
            if self.delay:
                time.sleep(self.delay)
            return [Completion(text=self._answer(messages, rollout_id, kwargs), model=self.model)] * n
        finally:
            with self._lock:
                self.in_flight -= 1

    def _answer(self, messages: list[dict[str, Any]], rollout_id: int | None, kwargs: dict[str, Any]) -> str:
        last = messages[-1]["content"]
        if "proposed_instruction" in last:
            text = self.proposals.get(rollout_id, f"Answer the question (variant {rollout_id}).")
            return f"[[ ## proposed_instruction ## ]]\n{text}\n\n[[ ## completed ## ]]"
        if "[[ ## summary ## ]]" in last:
            return "[[ ## summary ## ]]\nEach example is a word to transform.\n\n[[ ## completed ## ]]"
        word = _WORD.search(last).group(1)
        if "[[ ## word ## ]]`" in last:  # step one of the two-step program: copy the word out
            return f"[[ ## word ## ]]\n{word}\n\n[[ ## completed ## ]]"
        demos = sum(1 for m in messages if m["role"] == "assistant")
        good = (
            demos >= self.min_demos
            or "uppercase" in messages[0]["content"].lower()
            or word in self.good_words
        )
        if self.correct_when_sampling and kwargs.get("temperature") == 1.0 and rollout_id:
            good = True
        return f"[[ ## answer ## ]]\n{word.upper() if good else word}\n\n[[ ## completed ## ]]"

    def copy(self, **overrides: Any) -> ScriptedLM:
        return self

    def dump_state(self) -> dict[str, Any]:
        return {"model": self.model}


class TwoStep(dspy.Module):
    def __init__(self) -> None:
        self.find = dspy.Predict("question -> word")
        self.answer = dspy.Predict("word -> answer")

    def forward(self, question: str) -> dspy.Prediction:
        word = self.find(question=question).word
        return dspy.Prediction(answer=self.answer(word=word).answer)


def exact(example: Any, prediction: Any, trace: Any = None) -> bool:
    return example.answer == prediction.answer


def make_data(words: list[str] = WORDS) -> list[dspy.Example]:
    return [
        dspy.Example(question=f"word: {w}", word=w, answer=w.upper()).with_inputs("question") for w in words
    ]


@pytest.fixture
def data() -> list[dspy.Example]:
    return make_data()


@pytest.fixture
def lm() -> ScriptedLM:
    lm = ScriptedLM()
    with dspy.context(lm=lm):
        yield lm


class SimulatedKill(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing in the optimizer swallows it."""


class KillingMetric:
    def __init__(self, after: int):
        self.after = after
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, example: Any, prediction: Any, trace: Any = None) -> bool:
        with self._lock:
            self.calls += 1
            if self.calls > self.after:
                raise SimulatedKill()
        return exact(example, prediction)


def score(program: Any, devset: list[dspy.Example]) -> float:
    return dspy.Evaluate(devset=devset, metric=exact, display_progress=False, num_threads=1)(program).score


# ---- LabeledFewShot ----------------------------------------------------------------------------------


def test_labeled_fewshot_gives_every_predictor_k_demos_and_leaves_the_student_alone(data, lm, tmp_path):
    student = TwoStep()
    compiled = LabeledFewShot(k=3, metric=exact, run_dir=tmp_path / "run").compile(
        student, trainset=data[:8], valset=data[8:]
    )
    assert [len(p.demos) for p in compiled.predictors()] == [3, 3]
    assert all(d in data[:8] for p in compiled.predictors() for d in p.demos)
    assert [len(p.demos) for p in student.predictors()] == [0, 0]
    again = LabeledFewShot(k=3).compile(student, trainset=data[:8])
    assert [p.demos for p in again.predictors()] == [p.demos for p in compiled.predictors()]  # seeded
    report = (tmp_path / "run" / "report.md").read_text()
    assert "score_before" in report and "score_after" in report
    loaded = TwoStep()
    loaded.load(tmp_path / "run" / "program.json")
    assert loaded.dump_state() == compiled.dump_state()


# ---- BootstrapFewShot -----------------------------------------------------------------------------------


def test_bootstrap_keeps_full_traces_of_passing_runs_as_demos_for_every_predictor(data, lm, tmp_path):
    student = TwoStep()
    before = score(student, data[8:])
    opt = BootstrapFewShot(
        metric=exact, max_bootstrapped_demos=2, max_labeled_demos=3, run_dir=tmp_path / "run", progress=False
    )
    compiled = opt.compile(student, trainset=data[:8], valset=data[8:])
    find, answer = compiled.find, compiled.answer
    augmented = [d for d in answer.demos if d.get("augmented")]
    assert len(augmented) == 2 and len(answer.demos) == 3  # 2 bootstrapped + 1 labeled
    assert augmented[0].toDict() == {"augmented": True, "word": "apple", "answer": "APPLE"}
    assert [d.toDict() for d in find.demos if d.get("augmented")] == [
        {"augmented": True, "question": "word: apple", "word": "apple"},
        {"augmented": True, "question": "word: berry", "word": "berry"},
    ]
    assert student.answer.demos == [] and student.find.demos == []  # the input is untouched
    assert before == 0.0 and score(compiled, data[8:]) == 100.0
    assert opt.summary["score_before"] == 0.0 and opt.summary["score_after"] == 100.0
    # Only as many teacher runs as a one-at-a-time loop would make: 2 passing examples x 2 calls.
    assert opt.summary["teacher_runs"] == 2
    loaded = TwoStep()
    loaded.load(tmp_path / "run" / "program.json")
    assert loaded.dump_state() == compiled.dump_state()
    assert (
        json.loads((tmp_path / "run" / "program.json").read_text())["answer"]["demos"][0]["augmented"] is True
    )


def test_bootstrap_runs_the_teacher_concurrently(data):
    lm = ScriptedLM(delay=0.05)
    with dspy.context(lm=lm):
        BootstrapFewShot(
            metric=exact, max_bootstrapped_demos=6, max_labeled_demos=2, num_threads=6, progress=False
        ).compile(dspy.Predict("question -> answer"), trainset=data)
    assert lm.max_in_flight >= 3


def test_concurrent_bootstrapping_makes_no_more_teacher_runs_than_a_sequential_loop(data):
    # Only these examples pass; a one-at-a-time loop stops after the third of them, at index 9.
    lm = ScriptedLM(min_demos=99, delay=0.02, good_words={"berry", "falcon", "juliet", "kilo", "olive"})
    with dspy.context(lm=lm):
        opt = BootstrapFewShot(
            metric=exact, max_bootstrapped_demos=3, max_labeled_demos=0, num_threads=8, progress=False
        )
        compiled = opt.compile(dspy.Predict("question -> answer"), trainset=data)
    assert [d.answer for d in compiled.demos] == ["BERRY", "FALCON", "JULIET"]
    assert lm.calls == opt.summary["teacher_runs"] == 10
    assert lm.max_in_flight >= 2


def test_bootstrap_later_rounds_sample_with_new_rollout_ids(data):
    lm = ScriptedLM(min_demos=99, correct_when_sampling=True)
    with dspy.context(lm=lm):
        opt = BootstrapFewShot(
            metric=exact, max_bootstrapped_demos=2, max_labeled_demos=0, max_rounds=3, progress=False
        )
        compiled = opt.compile(dspy.Predict("question -> answer"), trainset=data[:4])
    assert len(compiled.predictors()[0].demos) == 2
    sampled = [r for r in lm.requests if r["rollout_id"]]
    assert sampled and all(r["kwargs"].get("temperature") == 1.0 for r in sampled)
    assert {r["rollout_id"] for r in sampled} == {1}
    assert all(r["kwargs"].get("temperature") != 1.0 for r in lm.requests if not r["rollout_id"])


def test_bootstrap_with_a_teacher_that_never_passes_gives_labeled_demos_only(data, tmp_path, caplog):
    lm = ScriptedLM(min_demos=99)
    student = dspy.Predict("question -> answer", demos=[data[0]])
    with dspy.context(lm=lm), caplog.at_level("WARNING"):
        opt = BootstrapFewShot(
            metric=exact,
            max_bootstrapped_demos=2,
            max_labeled_demos=2,
            run_dir=tmp_path / "run",
            progress=False,
        )
        compiled = opt.compile(student, trainset=data[1:6])
    # As in DSPy: the compiled program holds labeled demos drawn from the trainset, and is marked compiled.
    assert compiled is not student and compiled._compiled and student.demos == [data[0]]
    assert len(compiled.demos) == 2 and all(d in data[1:6] for d in compiled.demos)
    assert any("never passed" in w for w in opt.summary["warnings"])
    assert "never passed" in caplog.text
    assert "**warning:** the teacher never passed" in (tmp_path / "run" / "report.md").read_text()


def test_bootstrap_uses_a_given_teacher_program(data):
    student_lm, teacher_lm = (
        ScriptedLM(min_demos=99, model="student"),
        ScriptedLM(min_demos=0, model="teacher"),
    )
    teacher = dspy.Predict("question -> answer", lm=teacher_lm)
    compiled = BootstrapFewShot(
        metric=exact, max_bootstrapped_demos=2, max_labeled_demos=0, progress=False
    ).compile(dspy.Predict("question -> answer", lm=student_lm), trainset=data[:4], teacher=teacher)
    assert len(compiled.demos) == 2 and teacher_lm.calls == 2 and student_lm.calls == 0
    assert compiled.lm is not None and compiled.lm.model == "student"  # the student's LM binding is kept


# ---- BootstrapFewShotWithRandomSearch ------------------------------------------------------------------


def test_random_search_keeps_the_best_candidate_and_reports_every_score(data, tmp_path):
    lm = ScriptedLM(min_demos=2)
    with dspy.context(lm=lm):
        opt = BootstrapFewShotWithRandomSearch(
            metric=exact,
            max_bootstrapped_demos=3,
            max_labeled_demos=2,
            num_candidate_programs=3,
            run_dir=tmp_path / "run",
            progress=False,
        )
        compiled = opt.compile(dspy.Predict("question -> answer"), trainset=data[:8], valset=data[8:])
        assert score(compiled, data[8:]) == 100.0
    scores = opt.summary["scores"]
    assert sorted(scores) == [-3, -2, -1, 0, 1, 2]
    assert scores[-3] == 0.0 and opt.summary["score_before"] == 0.0 and opt.summary["score_after"] == 100.0
    report = (tmp_path / "run" / "report.md").read_text()
    table = [line for line in report.splitlines() if re.match(r"\| \d+ \| -?\d+ \|", line)]
    assert len(table) == 6
    assert (tmp_path / "run" / "report.png").exists()
    assert [s for s, _, _ in opt.candidate_programs] == sorted(scores.values(), reverse=True)


def test_random_search_is_deterministic_for_a_seed(data, tmp_path):
    states = []
    for name in ("a", "b"):
        with dspy.context(lm=ScriptedLM(min_demos=2)):
            opt = BootstrapFewShotWithRandomSearch(
                metric=exact,
                max_bootstrapped_demos=3,
                max_labeled_demos=2,
                num_candidate_programs=3,
                seed=7,
                num_threads=4,
                run_dir=tmp_path / name,
                progress=False,
            )
            states.append(
                (
                    opt.compile(
                        dspy.Predict("question -> answer"), trainset=data[:8], valset=data[8:]
                    ).dump_state(),
                    opt.summary["scores"],
                )
            )
    assert states[0] == states[1]


# ---- MIPROv2 ---------------------------------------------------------------------------------------------


def mipro(**overrides: Any) -> MIPROv2:
    options = dict(
        metric=exact,
        auto=None,
        num_candidates=4,
        num_trials=8,
        max_bootstrapped_demos=0,
        max_labeled_demos=0,
        minibatch_size=3,
        minibatch_full_eval_steps=2,
        seed=3,
        progress=False,
        num_threads=4,
    )
    options.update(overrides)
    return MIPROv2(**options)


def test_mipro_finds_the_instruction_that_works_with_a_separate_proposer_lm(data, tmp_path):
    task_lm = ScriptedLM(min_demos=99, model="task")
    proposer = ScriptedLM(
        model="proposer", proposals={1: "Be brief.", 2: "Reply in UPPERCASE letters.", 3: "Think first."}
    )
    opt = mipro(prompt_model=proposer, task_model=task_lm, run_dir=tmp_path / "run")
    student = dspy.Predict("question -> answer")
    compiled = opt.compile(student, trainset=data[:8], valset=data[8:])
    assert compiled.signature.instructions == "Reply in UPPERCASE letters."
    assert student.signature.instructions != compiled.signature.instructions
    assert opt.summary["score_before"] == 0.0 and opt.summary["score_after"] == 100.0
    proposer_prompts = [r["messages"][-1]["content"] for r in proposer.requests]
    assert len(proposer.requests) == 1 + 3  # one data summary + three proposals
    assert all("proposed_instruction" in p or "summary" in p for p in proposer_prompts)
    assert not any("proposed_instruction" in r["messages"][-1]["content"] for r in task_lm.requests)
    # Proposals are grounded in the data summary and the program's signature.
    assert "Each example is a word to transform." in proposer_prompts[-1]
    assert "question -> answer" in proposer_prompts[-1]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Reply in UPPERCASE letters." in report and "| minibatch |" in report and "| full |" in report
    assert (tmp_path / "run" / "report.png").exists()
    with dspy.context(lm=task_lm):
        assert score(compiled, data[8:]) == 100.0


def test_mipro_searches_bootstrapped_demo_sets_too(data, tmp_path):
    lm = ScriptedLM(min_demos=2, proposals={1: "Be brief.", 2: "Be exact.", 3: "Think."})
    with dspy.context(lm=lm):
        opt = mipro(max_bootstrapped_demos=2, max_labeled_demos=2, num_trials=10)
        compiled = opt.compile(TwoStep(), trainset=data[:8], valset=data[8:])
        assert score(compiled, data[8:]) == 100.0
    assert opt.summary["demo_sets"] >= 3 and opt.summary["score_before"] == 0.0
    assert len(compiled.answer.demos) >= 2


def test_mipro_is_deterministic_for_a_seed(data, tmp_path):
    results = []
    for name in ("a", "b"):
        lm = ScriptedLM(min_demos=2, proposals={1: "Be brief.", 2: "Use uppercase.", 3: "Think."})
        with dspy.context(lm=lm):
            opt = mipro(max_bootstrapped_demos=2, max_labeled_demos=1, run_dir=tmp_path / name)
            program = opt.compile(TwoStep(), trainset=data[:8], valset=data[8:])
        rows = [
            (r["trial"], r["kind"], r["params"], r["score"])
            for r in read_jsonl(tmp_path / name / "trials.jsonl")
            if r["kind"] != "bootstrap"
        ]
        results.append((program.dump_state(), rows))
    assert results[0] == results[1]


def test_mipro_auto_sets_the_budget(data):
    lm = ScriptedLM(min_demos=99)
    with dspy.context(lm=lm):
        opt = MIPROv2(
            metric=exact, auto="light", max_bootstrapped_demos=0, max_labeled_demos=0, progress=False
        )
        opt.compile(dspy.Predict("question -> answer"), trainset=data[:8], valset=data[8:])
    assert opt.summary["num_candidates"] == 6 and opt.summary["num_trials"] >= 9


# ---- budgets ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: BootstrapFewShot(
            metric=exact, max_bootstrapped_demos=4, max_labeled_demos=0, max_lm_calls=3, progress=False
        ),
        lambda: BootstrapFewShotWithRandomSearch(
            metric=exact,
            max_bootstrapped_demos=3,
            max_labeled_demos=2,
            num_candidate_programs=4,
            max_lm_calls=25,
            progress=False,
        ),
        lambda: mipro(max_lm_calls=40, max_bootstrapped_demos=1, max_labeled_demos=1),
    ],
)
def test_the_lm_call_budget_is_respected_and_reported(make, data):
    lm = ScriptedLM(min_demos=2)
    with dspy.context(lm=lm):
        opt = make()
        opt.compile(dspy.Predict("question -> answer"), trainset=data[:8], valset=data[8:])
    limit = opt.max_lm_calls
    assert lm.calls <= limit
    assert opt.summary["lm_calls"] == lm.calls and opt.summary["max_lm_calls"] == limit
    assert opt.summary["budget_exhausted"] is True
    assert any("budget" in w for w in opt.summary["warnings"])


def test_counting_lm_refunds_cache_hits():
    class CachedLM(ScriptedLM):
        def generate(self, messages, **kwargs):
            out = super().generate(messages, **kwargs)
            return [Completion(text=c.text, model=c.model, cached=True) for c in out]

    budget = LMBudget(2)
    lm = CountingLM(CachedLM(), budget)
    for _ in range(5):
        lm.generate([{"role": "user", "content": "word: apple"}])
    assert budget.calls == 0 and budget.cache_hits == 5 and not budget.exhausted


def test_repeated_evaluations_are_served_from_the_score_cache(data, lm):
    scorer = ProgramScorer(exact, budget=LMBudget(None), cache=ScoreCache(), progress=False)
    program = dspy.Predict("question -> answer", demos=[data[0]])
    first = scorer.evaluate(program, data[:6])
    calls = lm.calls
    second = scorer.evaluate(program.deepcopy(), data[:6])
    assert lm.calls == calls and second.cached == 6 and second.scores == first.scores
    scorer.evaluate(dspy.Predict("question -> answer"), data[:6])  # another program state: not cached
    assert lm.calls == calls + 6


# ---- resume after a kill -----------------------------------------------------------------------------------


def test_mipro_resumes_after_a_kill_without_redoing_finished_trials(data, tmp_path):
    def run(metric, run_dir):
        lm = ScriptedLM(min_demos=2, proposals={1: "Be brief.", 2: "Use uppercase.", 3: "Think."})
        with dspy.context(lm=lm):
            opt = mipro(
                metric=metric,
                max_bootstrapped_demos=1,
                max_labeled_demos=1,
                num_trials=10,
                run_dir=run_dir,
                num_threads=1,
            )
            return opt.compile(TwoStep(), trainset=data[:8], valset=data[8:]), lm, opt

    reference, fresh_lm, _ = run(exact, tmp_path / "reference")
    with pytest.raises(SimulatedKill):
        run(KillingMetric(after=30), tmp_path / "killed")
    done_before = [
        r for r in read_jsonl(tmp_path / "killed" / "trials.jsonl") if r["kind"] in ("minibatch", "full")
    ]
    assert done_before, "the kill should come after some trials"
    resumed, resumed_lm, opt = run(exact, tmp_path / "killed")
    rows = [r for r in read_jsonl(tmp_path / "killed" / "trials.jsonl") if r["kind"] in ("minibatch", "full")]
    keys = [(r["trial"], r["kind"]) for r in rows]
    assert len(keys) == len(set(keys))  # no trial was run twice
    assert rows[: len(done_before)] == done_before
    assert resumed.dump_state() == reference.dump_state()  # same result as a run that was never killed
    assert resumed_lm.calls < fresh_lm.calls and opt.summary["resumed"] is True


def test_random_search_resumes_after_a_kill(data, tmp_path):
    def run(metric):
        lm = ScriptedLM(min_demos=2)
        with dspy.context(lm=lm):
            opt = BootstrapFewShotWithRandomSearch(
                metric=metric,
                max_bootstrapped_demos=3,
                max_labeled_demos=2,
                num_candidate_programs=3,
                run_dir=tmp_path / "run",
                num_threads=1,
                progress=False,
            )
            return opt.compile(dspy.Predict("question -> answer"), trainset=data[:8], valset=data[8:]), lm

    with pytest.raises(SimulatedKill):
        run(KillingMetric(after=20))
    first = read_jsonl(tmp_path / "run" / "trials.jsonl")
    scored = [r["seed"] for r in first if r["kind"] == "candidate"]
    assert scored[:2] == [-3, -2]
    program, lm = run(exact)
    rows = [r for r in read_jsonl(tmp_path / "run" / "trials.jsonl") if r["kind"] == "candidate"]
    assert [r["seed"] for r in rows] == [-3, -2, -1, 0, 1, 2]
    # Resumed candidates are not re-evaluated: their requests never reach the LM again.
    zero_shot_prompts = [r for r in lm.requests if sum(m["role"] == "assistant" for m in r["messages"]) == 0]
    assert not zero_shot_prompts


def test_bootstrap_resumes_after_a_kill(data, tmp_path):
    def run(metric):
        lm = ScriptedLM(min_demos=99, correct_when_sampling=False)
        with dspy.context(lm=lm):
            opt = BootstrapFewShot(
                metric=metric,
                max_bootstrapped_demos=2,
                max_labeled_demos=0,
                run_dir=tmp_path / "run",
                num_threads=1,
                progress=False,
            )
            return opt.compile(dspy.Predict("question -> answer"), trainset=data[:6]), lm

    with pytest.raises(SimulatedKill):
        run(KillingMetric(after=3))
    assert len(read_jsonl(tmp_path / "run" / "trials.jsonl")) == 3
    _, lm = run(exact)
    assert lm.calls == 3  # the 3 examples tried before the kill are not tried again
    assert len(read_jsonl(tmp_path / "run" / "trials.jsonl")) == 6


def test_a_run_dir_from_other_settings_is_refused(data, lm, tmp_path):
    BootstrapFewShot(
        metric=exact, max_bootstrapped_demos=1, run_dir=tmp_path / "run", progress=False
    ).compile(dspy.Predict("question -> answer"), trainset=data[:4])
    with pytest.raises(OptimizerError, match="max_bootstrapped_demos"):
        BootstrapFewShot(
            metric=exact, max_bootstrapped_demos=2, run_dir=tmp_path / "run", progress=False
        ).compile(dspy.Predict("question -> answer"), trainset=data[:4])


# ---- bad input --------------------------------------------------------------------------------------------


ALL = {
    "labeled": lambda **kw: LabeledFewShot(k=2),
    "bootstrap": lambda **kw: BootstrapFewShot(metric=kw.get("metric", exact), progress=False),
    "random_search": lambda **kw: BootstrapFewShotWithRandomSearch(
        metric=kw.get("metric", exact), num_candidate_programs=1, progress=False
    ),
    "mipro": lambda **kw: mipro(
        metric=kw.get("metric", exact), max_bootstrapped_demos=1, max_labeled_demos=1
    ),
}


@pytest.mark.parametrize("name", sorted(ALL))
def test_an_empty_trainset_is_refused(name, lm):
    with pytest.raises(OptimizerError, match="trainset is empty"):
        ALL[name]().compile(dspy.Predict("question -> answer"), trainset=[])


@pytest.mark.parametrize("name", sorted(ALL))
def test_examples_without_inputs_or_an_empty_valset_are_refused(name, lm, data):
    with pytest.raises(OptimizerError, match=r"trainset\[0\] has no input keys"):
        ALL[name]().compile(
            dspy.Predict("question -> answer"), trainset=[dspy.Example(question="q", answer="a")]
        )
    if name != "labeled":
        with pytest.raises(OptimizerError, match="valset is empty"):
            ALL[name]().compile(dspy.Predict("question -> answer"), trainset=data[:4], valset=[])


@pytest.mark.parametrize("name", ["bootstrap", "random_search", "mipro"])
def test_a_metric_returning_a_non_number_raises_metric_error(name, lm, data):
    with pytest.raises(MetricError, match="str"):
        ALL[name](metric=lambda ex, pred, trace=None: "yes").compile(
            dspy.Predict("question -> answer"), trainset=data[:6], valset=data[6:10]
        )


@pytest.mark.parametrize("name", ["bootstrap", "random_search", "mipro"])
def test_a_metric_raising_on_some_examples_is_counted_and_the_run_goes_on(name, lm, data, tmp_path):
    def flaky(example, prediction, trace=None):
        if example.answer in ("BERRY", "JULIET"):
            raise ValueError("cannot score this one")
        return exact(example, prediction)

    opt = ALL[name](metric=flaky)
    opt.run_dir = tmp_path / "run"
    compiled = opt.compile(dspy.Predict("question -> answer"), trainset=data[:6], valset=data[6:12])
    assert compiled is not None
    assert opt.summary["errors"].get("metric", 0) >= 1
    assert "metric" in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: LabeledFewShot(k=0), "k must be a positive"),
        (lambda: BootstrapFewShot(metric=exact, max_lm_calls=0), "max_lm_calls"),
        (
            lambda: BootstrapFewShot(metric=exact, max_bootstrapped_demos=0, max_labeled_demos=0),
            "no demo budget",
        ),
        (lambda: BootstrapFewShot(metric=exact, max_rounds=0), "max_rounds"),
        (
            lambda: BootstrapFewShotWithRandomSearch(metric=exact, num_candidate_programs=0),
            "num_candidate_programs",
        ),
        (lambda: BootstrapFewShotWithRandomSearch(metric=exact, max_lm_calls=0), "max_lm_calls"),
        (lambda: MIPROv2(metric=exact, auto=None, num_candidates=0, num_trials=5), "num_candidates"),
        (lambda: MIPROv2(metric=exact, auto=None, num_candidates=3, num_trials=0), "num_trials"),
        (lambda: MIPROv2(metric=exact, max_lm_calls=0), "max_lm_calls"),
        (lambda: MIPROv2(metric=exact, auto="huge"), "auto must be one of"),
    ],
)
def test_zero_budgets_are_refused(make, match):
    with pytest.raises(OptimizerError, match=match):
        make()


def test_mipro_zero_trials_at_compile_time_is_refused(lm, data):
    with pytest.raises(OptimizerError, match="num_trials"):
        mipro().compile(dspy.Predict("question -> answer"), trainset=data[:6], num_trials=0)


def test_optimizers_export_through_the_package():
    import dspylite.optimizers as optimizers

    assert dspy.MIPROv2 is optimizers.MIPROv2
    assert optimizers.BootstrapFewShotWithRandomSearch.__module__ == "dspylite.optimizers.random_search"
    assert set(optimizers.__all__) >= {
        "LabeledFewShot",
        "BootstrapFewShot",
        "BootstrapFewShotWithRandomSearch",
        "MIPROv2",
        "BootstrapFinetune",
        "GRPO",
        "BetterTogether",
    }


def test_report_files_exist_for_every_optimizer(lm, data, tmp_path: Path):
    for name, make in ALL.items():
        opt = make()
        opt.run_dir = tmp_path / name
        opt.compile(dspy.Predict("question -> answer"), trainset=data[:6], valset=data[6:10])
        assert (tmp_path / name / "report.md").exists() and (tmp_path / name / "program.json").exists()
        assert (tmp_path / name / "config.yaml").exists()
