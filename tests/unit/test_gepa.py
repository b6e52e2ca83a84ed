"""GEPA's search logic with scripted task and reflection LMs (see gepa_helpers)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from gepa_helpers import RuleLM, ScriptedReflectionLM, TwoPart, exact_metric, make_data

import dspylite as dspy
from dspylite.datasets import fact_qa_feedback_metric, fact_topic_feedback_metric
from dspylite.errors import OptimizerError
from dspylite.optimizers.gepa import GEPA, auto_budget
from dspylite.utils.io import read_jsonl


def _compile(tmp_path, *, suffixes, name="run", lm=None, refl=None, **options):
    train, val, gold = make_data()
    lm = lm or RuleLM(gold)
    refl = refl or ScriptedReflectionLM(suffixes)
    defaults = dict(max_metric_calls=60, reflection_minibatch_size=2, use_merge=False, num_threads=2)
    gepa = GEPA(
        exact_metric, reflection_lm=refl, run_dir=tmp_path / name, progress=False, **{**defaults, **options}
    )
    student = TwoPart()
    with dspy.context(lm=lm):
        compiled = gepa.compile(student, trainset=train, valset=val)
    return gepa, compiled, student, lm, refl


def _iterations(run_dir):
    rows = {}
    for row in read_jsonl(run_dir / "trials.jsonl"):
        if row.get("kind") == "iteration":
            rows[row["iteration"]] = row
    return [rows[i] for i in sorted(rows)]


def test_a_candidate_is_accepted_only_when_its_minibatch_improves(tmp_path):
    gepa, compiled, student, _, refl = _compile(tmp_path, suffixes=["Be careful.", "RULE"])
    rows = _iterations(tmp_path / "run")
    proposed = [r for r in rows if r.get("minibatch_after") is not None]
    assert proposed, "no proposal was scored on a minibatch"
    useless = [r for r in proposed if "RULE" not in json.dumps(r.get("new_instructions", {}))]
    assert useless, "the script should have produced at least one useless proposal"
    for row in proposed:
        improved = row["minibatch_after"] > row["minibatch_before"]
        assert row["accepted"] == improved, row
    for row in useless:  # "Be careful." never helps the scripted task LM
        assert not row["accepted"]
    candidates = json.loads((tmp_path / "run" / "candidates.json").read_text())
    accepted = {r["new_candidate"] for r in rows if r["accepted"]}
    assert accepted == {c["idx"] for c in candidates[1:]}
    for c in candidates[1:]:
        assert "RULE" in json.dumps(c["instructions"]) and "Be careful" not in json.dumps(c["instructions"])
    # the returned program is a new one with the best instructions; the student is untouched
    assert gepa.summary["score_after"] > gepa.summary["score_before"]
    assert "RULE" in json.dumps({n: p.signature.instructions for n, p in compiled.named_predictors()})
    assert [p.signature.instructions for p in student.predictors()] == [
        "Answer the A question.",
        "Answer the B question.",
    ]
    # every reflection prompt and reply is kept
    reflections = read_jsonl(tmp_path / "run" / "reflections.jsonl")
    assert len(reflections) == refl.calls
    assert all(r["prompt"] in refl.prompts and r["reply"].startswith("```") for r in reflections)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Pareto frontier" in report and (tmp_path / "run" / "report.png").exists()


def test_the_frontier_keeps_a_per_example_best(tmp_path):
    # Fixing pa wins the a-questions but loses the c-questions, so no candidate is best everywhere;
    # the frontier must list, for every val example, the max over candidates and who reached it.
    gepa, *_ = _compile(tmp_path, suffixes=["RULE"], max_metric_calls=60)
    candidates = json.loads((tmp_path / "run" / "candidates.json").read_text())
    frontier = json.loads((tmp_path / "run" / "frontier.json").read_text())
    assert len(frontier) == 6
    for row in frontier:
        scores = {c["idx"]: c["val_subscores"][row["val_id"]] for c in candidates}
        best = max(scores.values())
        assert row["best_score"] == best
        assert row["candidates"] == sorted(i for i, s in scores.items() if s == best)
    # a candidate better on only half the examples stays on the frontier next to a better one
    on_front = {i for row in frontier for i in row["candidates"]}
    assert {c["idx"] for c in candidates if c["on_frontier"]} == on_front
    assert gepa.frontier == frontier


def test_merge_combines_predictors_from_two_lineages(tmp_path):
    # With seed 2 the Pareto draw explores pa and pb from the seed in separate lineages (fixing pa
    # breaks the c-questions, so the seed stays on the frontier), which is what merge needs.
    seed = 2
    gepa, *_ = _compile(
        tmp_path, name=f"merge{seed}", suffixes=["RULE"], use_merge=True, max_metric_calls=90, seed=seed
    )
    merges = [
        r for r in _iterations(tmp_path / f"merge{seed}") if r.get("tag") == "merge" and r.get("accepted")
    ]
    assert merges, "no accepted merge"
    merge = merges[0]
    candidates = {
        c["idx"]: c for c in json.loads((tmp_path / f"merge{seed}" / "candidates.json").read_text())
    }
    merged = candidates[merge["new_candidate"]]
    p1, p2 = (candidates[i] for i in merge["parents"][:2])
    # each predictor's text comes from one of the parents, and the two parents are different lineages
    for name, text in merged["instructions"].items():
        assert text in (p1["instructions"][name], p2["instructions"][name])
    assert merged["instructions"] != p1["instructions"] and merged["instructions"] != p2["instructions"]
    assert set(merged["parents"]) == set(merge["parents"])
    assert gepa.summary["merges_accepted"] >= 1


@pytest.mark.parametrize("budget", [31, 47, 60])
def test_the_metric_call_budget_is_never_exceeded(tmp_path, budget):
    calls = {"program": 0}

    def counting_metric(gold, pred, trace=None, pred_name=None, pred_trace=None):
        if pred_name is None:
            calls["program"] += 1
        return exact_metric(gold, pred, trace, pred_name, pred_trace)

    train, val, gold = make_data()
    gepa = GEPA(
        counting_metric,
        reflection_lm=ScriptedReflectionLM(["Be careful.", "RULE"]),
        max_metric_calls=budget,
        reflection_minibatch_size=2,
        use_merge=True,
        run_dir=tmp_path / "b",
        progress=False,
        num_threads=2,
    )
    with dspy.context(lm=RuleLM(gold)):
        gepa.compile(TwoPart(), trainset=train, valset=val)
    assert gepa.summary["metric_calls"] <= budget
    assert calls["program"] <= budget
    budget_file = json.loads((tmp_path / "b" / "budget.json").read_text())
    assert budget_file["max_metric_calls"] == budget


def test_the_lm_call_budget_is_never_exceeded(tmp_path):
    train, val, gold = make_data()
    lm, refl = RuleLM(gold), ScriptedReflectionLM(["Be careful.", "RULE"])
    gepa = GEPA(
        exact_metric,
        reflection_lm=refl,
        max_metric_calls=200,
        max_lm_calls=20,
        reflection_minibatch_size=2,
        use_merge=False,
        run_dir=tmp_path / "l",
        progress=False,
        num_threads=2,
    )
    with dspy.context(lm=lm):
        gepa.compile(TwoPart(), trainset=train, valset=val)
    assert len(lm.history) + refl.calls <= 20
    assert gepa.summary["lm_calls"] == len(lm.history) + refl.calls
    assert any("LM-call budget" in w for w in gepa.summary["warnings"])


@pytest.mark.parametrize(
    ("use_merge", "kill_at", "suffixes"),
    [(False, 3, ["Be careful.", "RULE"]), (True, 2, ["RULE"]), (True, 3, ["RULE"])],
)
def test_resume_after_a_kill_continues_without_re_spending(tmp_path, use_merge, kill_at, suffixes):
    train, val, gold = make_data()
    # with suffixes ["RULE"], seed 2 merges at iteration 3 (see the merge test): kills before and after it
    options = dict(
        max_metric_calls=90, reflection_minibatch_size=2, use_merge=use_merge, num_threads=1, seed=2
    )

    # the uninterrupted run, for reference
    lm_ref, refl_ref = RuleLM(gold), ScriptedReflectionLM(suffixes)
    ref = GEPA(exact_metric, reflection_lm=refl_ref, run_dir=tmp_path / "ref", progress=False, **options)
    with dspy.context(lm=lm_ref):
        ref.compile(TwoPart(), trainset=train, valset=val)

    # killed during a reflection, then resumed with the same run directory
    lm1, refl1 = RuleLM(gold), ScriptedReflectionLM(suffixes, fail_on_call=kill_at)
    killed = GEPA(exact_metric, reflection_lm=refl1, run_dir=tmp_path / "run", progress=False, **options)
    with pytest.raises(KeyboardInterrupt), dspy.context(lm=lm1):
        killed.compile(TwoPart(), trainset=train, valset=val)
    lm2 = RuleLM(gold)
    refl2 = ScriptedReflectionLM(suffixes)
    refl2.calls = kill_at - 1  # the script continues where the killed process stopped
    resumed = GEPA(exact_metric, reflection_lm=refl2, run_dir=tmp_path / "run", progress=False, **options)
    with dspy.context(lm=lm2):
        compiled = resumed.compile(TwoPart(), trainset=train, valset=val)

    assert resumed.summary["resumed"]

    # nothing paid twice: the killed and the resumed process together sent exactly the requests
    # the uninterrupted run sent (a request = instruction + question)
    def requests(lm):
        return Counter((h["messages"][0]["content"], h["messages"][-1]["content"]) for h in lm.history)

    assert requests(lm1) + requests(lm2) == requests(lm_ref)
    assert len(lm2.history) < len(lm_ref.history)
    assert (refl1.calls - 1) + (
        refl2.calls - (kill_at - 1)
    ) == refl_ref.calls  # the killed call never answered
    # and the search is the one the uninterrupted run made
    assert json.loads((tmp_path / "run" / "candidates.json").read_text()) == json.loads(
        (tmp_path / "ref" / "candidates.json").read_text()
    )
    assert resumed.summary["metric_calls"] == ref.summary["metric_calls"]
    best = ref.candidates[ref.summary["best_candidate"]]["instructions"]
    assert {n: p.signature.instructions for n, p in compiled.named_predictors()} == best


def test_the_same_seed_gives_the_same_search(tmp_path):
    a, *_ = _compile(tmp_path, name="a", suffixes=["Be careful.", "RULE"], use_merge=True, num_threads=4)
    b, *_ = _compile(tmp_path, name="b", suffixes=["Be careful.", "RULE"], use_merge=True, num_threads=4)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]  # noqa: E731
    assert strip(_iterations(tmp_path / "a")) == strip(_iterations(tmp_path / "b"))
    assert a.candidates == b.candidates


def test_a_plain_metric_shows_the_score_and_labels_to_the_reflection_lm(tmp_path):
    train, val, gold = make_data()
    refl = ScriptedReflectionLM(["RULE"])

    def plain(example, pred, trace=None):
        return float(pred.answer == example.answer)

    gepa = GEPA(
        plain,
        reflection_lm=refl,
        max_metric_calls=40,
        reflection_minibatch_size=2,
        use_merge=False,
        progress=False,
    )
    with dspy.context(lm=RuleLM(gold)):
        gepa.compile(TwoPart(), trainset=train, valset=val)
    assert refl.prompts
    assert all("This trajectory got a score of" in p and '"answer": "train-' in p for p in refl.prompts)


def test_budget_options_are_checked():
    refl = ScriptedReflectionLM(["RULE"])
    with pytest.raises(OptimizerError, match="exactly one budget"):
        GEPA(exact_metric, reflection_lm=refl)
    with pytest.raises(OptimizerError, match="exactly one budget"):
        GEPA(exact_metric, reflection_lm=refl, auto="light", max_metric_calls=10)
    with pytest.raises(OptimizerError, match="reflection_lm"):
        GEPA(exact_metric, max_metric_calls=100)
    with pytest.raises(OptimizerError, match="side_info"):
        GEPA(
            exact_metric, reflection_lm=refl, max_metric_calls=100, reflection_prompt_template="<curr_param>"
        )
    train, val, gold = make_data()
    with pytest.raises(OptimizerError, match="at least"), dspy.context(lm=RuleLM(gold)):
        GEPA(exact_metric, reflection_lm=refl, max_metric_calls=8, progress=False).compile(
            TwoPart(), trainset=train, valset=val
        )
    # DSPy's auto budget formula, e.g. light with 2 predictors and a valset of 6: int(8 * log2(6)) = 20 trials
    assert auto_budget(2, 6, 6) == 6 + 6 * 5 + 20 * 35 + ((20 + 1) // 5 + 1) * 6


def test_feedback_metrics_say_what_went_wrong():
    context = "Ann lives in Paris.\nAnn is 40 years old.\nBob lives in Rome."
    gold = dspy.Example(
        context=context, question="Where does Ann live?", fact="Ann lives in Paris.", answer="Paris"
    )
    wrong_line = fact_qa_feedback_metric(gold, dspy.Prediction(fact="Bob lives in Rome.", answer="Rome"))
    assert wrong_line.score == 0.0 and "wrong sentence" in wrong_line.feedback
    garbled = fact_qa_feedback_metric(gold, dspy.Prediction(fact="Ann lives in Pris.", answer="Pris"))
    assert "garbled" in garbled.feedback
    missing = fact_qa_feedback_metric(gold, dspy.Prediction(answer="Paris"), None, "extract.predict", None)
    assert "no fact" in missing.feedback
    right = fact_qa_feedback_metric(gold, dspy.Prediction(fact="Ann lives in Paris.", answer="Paris"))
    assert right.score == 1.0 and "right sentence" in right.feedback and "correct" in right.feedback
    topic = dspy.Example(sentence="Ann lives in Paris.", topic="city")
    assert (
        "not one of the allowed" in fact_topic_feedback_metric(topic, dspy.Prediction(topic="town")).feedback
    )
    assert fact_topic_feedback_metric(topic, dspy.Prediction(topic="city")).score == 1.0


def test_gepa_is_better_togethers_prompt_step(tmp_path):
    train, val, gold = make_data()
    gepa = GEPA(
        exact_metric,
        reflection_lm=ScriptedReflectionLM(["RULE"]),
        max_metric_calls=60,
        reflection_minibatch_size=2,
        use_merge=False,
        progress=False,
    )
    from dspylite.optimizers.better_together import BetterTogether

    bt = BetterTogether(exact_metric, prompt_optimizer=gepa, run_dir=tmp_path / "bt")
    student = TwoPart()
    with dspy.context(lm=RuleLM(gold)):
        best = bt.compile(student, trainset=train, valset=val, strategy="p")
    assert "RULE" in json.dumps({n: p.signature.instructions for n, p in best.named_predictors()})
    assert student.pa.signature.instructions == "Answer the A question."


def test_a_plain_callable_reflection_lm_works_and_is_counted(tmp_path):
    train, val, gold = make_data()
    prompts = []

    def reflect(prompt: str) -> str:  # dspy.GEPA accepts a prompt -> text callable too
        prompts.append(prompt)
        current = prompt.split("```", 2)[1].strip()
        return f"```\n{current} RULE\n```"

    lm = RuleLM(gold)
    gepa = GEPA(
        exact_metric,
        reflection_lm=reflect,
        max_metric_calls=60,
        reflection_minibatch_size=2,
        use_merge=False,
        progress=False,
    )
    with dspy.context(lm=lm):
        gepa.compile(TwoPart(), trainset=train, valset=val)
    assert prompts and gepa.summary["accepted"] >= 1
    assert gepa.summary["reflection_lm_calls"] == len(prompts)
    assert gepa.summary["lm_calls"] == len(lm.history) + len(prompts)
