"""The `dspylite finetune` job's config, task wiring and report (no vLLM, no training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dspylite.errors import ConfigError
from dspylite.run_dir import RunDir
from finetune.config import FinetuneConfig
from finetune.job import JobResult, TaskSettings, _write_report, load_job_config, task_parts

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_config_loads_with_overrides() -> None:
    cfg = load_job_config(ROOT / "configs" / "sft.yaml", ["sft.learning_rate=1e-3", "task.name=fact_topic"])
    assert cfg.sft.learning_rate == 1e-3
    assert cfg.task.name == "fact_topic"
    assert cfg.task.n_dev >= 200
    assert isinstance(cfg.sft, FinetuneConfig) and cfg.sft.lora.r <= cfg.server.max_lora_rank
    assert (ROOT / "configs" / "sft.yaml").read_text().startswith("# dspylite finetune configs/sft.yaml")


def test_unknown_keys_and_tasks_are_named() -> None:
    with pytest.raises(ConfigError, match="sft.lora.rank"):
        load_job_config(ROOT / "configs" / "sft.yaml", ["sft.lora.rank=8"])
    with pytest.raises(ConfigError, match="task.name must be one of"):
        load_job_config(ROOT / "configs" / "sft.yaml", ["task.name=nope"])


@pytest.mark.parametrize("name, inputs", [("fact_qa", {"context", "question"}), ("fact_topic", {"sentence"})])
def test_task_parts(name: str, inputs: set[str]) -> None:
    splits, metric, make_program = task_parts(TaskSettings(name=name, n_train=5, n_dev=7))
    assert (len(splits["train"]), len(splits["dev"])) == (5, 7)
    assert set(splits["dev"][0].inputs().keys()) == inputs
    assert metric(splits["dev"][0], splits["dev"][0]) == 1.0  # the gold labels score perfectly
    assert make_program().named_predictors()


class _Outcome:
    data_card = {
        "runs_passed": 3,
        "runs_total": 4,
        "metric_threshold": 1.0,
        "rows_train": 5,
        "rows_val": 1,
        "rows_per_predictor": {"classify": {"train": 5, "val": 1}},
        "runs_dropped": {"below_threshold": 1},
        "records_dropped": {},
    }
    train_metrics = {"sft-1": {"global_step": 4, "first_loss": 1.0, "last_loss": 0.5}}


def test_report_handles_a_perfect_score_and_shows_the_interval(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.log_metrics(step=1, phase="sft", loss=1.0)
    run.log_metrics(step=2, phase="sft", loss=0.5)
    perfect = {"score": 100.0, "n": 300, "mean": 1.0, "ci95": [0.987, 0.9999999999999998], "errors": {}}
    before = {"score": 20.0, "n": 300, "mean": 0.2, "ci95": [0.159, 0.249], "errors": {"parse": 2}}
    result = JobResult(
        run_dir=str(tmp_path),
        adapter="sft-1",
        before=before,
        after=perfect,
        difference={"mean": 0.8, "ci95_low": 0.755, "ci95_high": 0.845},
        report=str(run.report_md),
        seconds={"collect": 1.0},
    )
    cfg = load_job_config(ROOT / "configs" / "sft.yaml", ["task.name=fact_topic"])
    _write_report(run, cfg, result, _Outcome())
    text = run.report_md.read_text()
    assert "BootstrapFinetune on Fact Topic" in text
    assert "[0.987, 1.000]" in text and "parse=2" in text
    assert "+0.800, 95% CI [+0.755, +0.845]" in text
    assert run.report_png.stat().st_size > 0
