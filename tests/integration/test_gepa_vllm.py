"""GEPA end to end on the real vLLM server: the tiny model is both the task LM and the reflection LM.

Smoke size (6 train / 6 val, a budget of two iterations). The point is the real path: the adapter runs
FactQA through the real LM client, the feedback metric's words reach a real reflection request, and
the run directory ends with candidates, the frontier, the reflection prompts/replies and a report with
the curve. Whether the tiny model writes a *useful* instruction is not asserted (it mostly cannot).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dspylite as dspy
from dspylite.datasets import fact_qa_feedback_metric, load_fact_qa
from dspylite.datasets.programs import FactQA
from dspylite.utils.io import read_jsonl
from serving import VLLMServer

pytestmark = pytest.mark.integration


def test_gepa_on_the_tiny_model(vllm_server: VLLMServer, tmp_path: Path) -> None:
    data = load_fact_qa(seed=13, n_train=6, n_dev=6, n_test=0)
    task_lm = vllm_server.lm(max_tokens=96, cache_dir=tmp_path / "cache")
    # A separate client (sampling, longer replies): nothing assumes it is the task LM.
    reflection_lm = vllm_server.lm(max_tokens=200, temperature=1.0, cache_dir=tmp_path / "cache")
    budget = 6 + 2 * (2 * 2 + 6)  # the seed's valset pass plus two worst-case iterations
    gepa = dspy.GEPA(
        fact_qa_feedback_metric,
        reflection_lm=reflection_lm,
        max_metric_calls=budget,
        reflection_minibatch_size=2,
        use_merge=False,
        num_threads=4,
        run_dir=tmp_path / "run",
        progress=False,
    )
    student = FactQA()
    with dspy.context(lm=task_lm):
        compiled = gepa.compile(student, trainset=data["train"], valset=data["dev"])

    run = tmp_path / "run"
    assert gepa.summary["metric_calls"] <= budget
    assert gepa.summary["iterations"] >= 1
    candidates = json.loads((run / "candidates.json").read_text())
    assert candidates[0]["instructions"] == {
        n: p.signature.instructions for n, p in student.named_predictors()
    }
    assert len(json.loads((run / "frontier.json").read_text())) == 6
    reflections = read_jsonl(run / "reflections.jsonl")
    # every non-skipped iteration asked the real reflection LM with the feedback metric's words
    asked = [r for r in read_jsonl(run / "trials.jsonl") if r.get("reflections")]
    assert len(reflections) >= len(asked)
    if reflections:
        assert "sentence" in reflections[0]["prompt"] and reflections[0]["reply"] is not None
    report = (run / "report.md").read_text()
    assert "Pareto frontier" in report and "report.png" in report  # the score-vs-budget curve
    assert (run / "report.png").stat().st_size > 0
    loaded = FactQA()
    loaded.load(run / "program.json")
    assert {n: p.signature.instructions for n, p in loaded.named_predictors()} == {
        n: p.signature.instructions for n, p in compiled.named_predictors()
    }
