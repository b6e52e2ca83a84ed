"""Every prompt optimizer end to end on the real vLLM server, the tiny model and the Fact QA task.

Small on purpose (a dozen examples each way, light budgets): the point is that each optimizer runs
against a real server through the real LM client and adapters, writes its run directory, and reports
the valset score before and after.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import dspylite as dspy
from dspylite.datasets import fact_qa_metric, load_fact_qa
from dspylite.datasets.programs import FactQA
from dspylite.optimizers import BootstrapFewShot, BootstrapFewShotWithRandomSearch, LabeledFewShot, MIPROv2
from serving import VLLMServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dspy.Example]]:
    data = load_fact_qa(seed=11, n_train=12, n_dev=12, n_test=0)
    return {"train": data["train"], "val": data["dev"]}


@pytest.fixture
def task_lm(vllm_server: VLLMServer, tmp_path: Path) -> Any:
    lm = vllm_server.lm(max_tokens=96, cache_dir=tmp_path / "lm-cache")
    with dspy.context(lm=lm):
        yield lm


def _check_run(run_dir: Path, program: Any, summary: dict[str, Any]) -> None:
    report = (run_dir / "report.md").read_text()
    assert "score_before" in report and "score_after" in report
    assert isinstance(summary["score_before"], float) and isinstance(summary["score_after"], float)
    assert (run_dir / "config.yaml").exists()
    loaded = FactQA()
    loaded.load(run_dir / "program.json")
    assert loaded.dump_state()["extract"]["demos"] == program.dump_state()["extract"]["demos"]


def test_labeled_fewshot_on_the_tiny_model(task_lm: Any, splits: dict, tmp_path: Path) -> None:
    opt = LabeledFewShot(k=2, metric=fact_qa_metric, run_dir=tmp_path / "run", progress=False)
    program = opt.compile(FactQA(), trainset=splits["train"], valset=splits["val"])
    assert [len(p.demos) for p in program.predictors()] == [2, 2]
    _check_run(tmp_path / "run", program, opt.summary)


def test_bootstrap_fewshot_on_the_tiny_model(task_lm: Any, splits: dict, tmp_path: Path) -> None:
    opt = BootstrapFewShot(
        metric=fact_qa_metric,
        max_bootstrapped_demos=2,
        max_labeled_demos=2,
        run_dir=tmp_path / "run",
        progress=False,
    )
    student = FactQA()
    program = opt.compile(student, trainset=splits["train"], valset=splits["val"])
    assert student.extract.demos == [] and student.answer.demos == []
    _check_run(tmp_path / "run", program, opt.summary)
    assert opt.summary["lm_calls"] > 0
    if opt.summary["passed"]:
        augmented = [d for d in program.extract.demos if d.get("augmented")]
        assert augmented and all(
            set(d.keys()) == {"augmented", "context", "question", "fact"} for d in augmented
        )
    else:  # the tiny model failed every teacher run: the student comes back unchanged, with a warning
        assert any("never passed" in w for w in opt.summary["warnings"])


def test_random_search_on_the_tiny_model(task_lm: Any, splits: dict, tmp_path: Path) -> None:
    opt = BootstrapFewShotWithRandomSearch(
        metric=fact_qa_metric,
        max_bootstrapped_demos=2,
        max_labeled_demos=2,
        num_candidate_programs=2,
        run_dir=tmp_path / "run",
        progress=False,
    )
    program = opt.compile(FactQA(), trainset=splits["train"], valset=splits["val"])
    _check_run(tmp_path / "run", program, opt.summary)
    assert sorted(opt.summary["scores"]) == [-3, -2, -1, 0, 1]
    # The zero-shot program is one of the candidates, so the winner is at least as good on the valset.
    assert opt.summary["score_after"] == max(opt.summary["scores"].values()) >= opt.summary["score_before"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "trials.jsonl").read_text().splitlines()]
    assert len([r for r in rows if r["kind"] == "candidate"]) == 5


def test_mipro_on_the_tiny_model(task_lm: Any, splits: dict, tmp_path: Path) -> None:
    opt = MIPROv2(
        metric=fact_qa_metric,
        auto=None,
        num_candidates=3,
        num_trials=4,
        minibatch_size=6,
        minibatch_full_eval_steps=2,
        max_bootstrapped_demos=1,
        max_labeled_demos=1,
        seed=0,
        max_lm_calls=600,
        run_dir=tmp_path / "run",
        progress=False,
    )
    program = opt.compile(FactQA(), trainset=splits["train"], valset=splits["val"])
    _check_run(tmp_path / "run", program, opt.summary)
    assert opt.summary["score_after"] >= opt.summary["score_before"]
    assert opt.summary["lm_calls"] <= 600
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| minibatch |" in report and "Instruction candidates" in report
