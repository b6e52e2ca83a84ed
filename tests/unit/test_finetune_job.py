"""The `dspylite finetune` job's config and report (no vLLM, no training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dspylite.config_io import load_config
from dspylite.errors import ConfigError
from dspylite.jobs.finetune_job import FinetuneJobConfig
from dspylite.jobs.report_job import render_report
from dspylite.run_dir import RunDir
from finetune.config import FinetuneConfig

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_config_loads_with_overrides() -> None:
    cfg = load_config(
        FinetuneJobConfig, ROOT / "configs" / "sft.yaml", ["sft.learning_rate=1e-3", "task.name=fact_topic"]
    )
    assert cfg.sft.learning_rate == 1e-3
    assert cfg.task.name == "fact_topic"
    assert cfg.task.n_dev >= 200
    assert isinstance(cfg.sft, FinetuneConfig) and cfg.sft.lora.r <= cfg.server.max_lora_rank
    assert (ROOT / "configs" / "sft.yaml").read_text().startswith("# dspylite finetune configs/sft.yaml")


def test_unknown_keys_tasks_and_ranks_are_named() -> None:
    with pytest.raises(ConfigError, match="sft.lora.rank"):
        load_config(FinetuneJobConfig, ROOT / "configs" / "sft.yaml", ["sft.lora.rank=8"])
    with pytest.raises(ConfigError, match="task.name must be one of"):
        load_config(FinetuneJobConfig, ROOT / "configs" / "sft.yaml", ["task.name=nope"])
    with pytest.raises(ConfigError, match="sft.lora.r=32 exceeds server.max_lora_rank=16"):
        load_config(FinetuneJobConfig, ROOT / "configs" / "sft.yaml", ["sft.lora.r=32"])


def test_report_handles_a_perfect_score_and_shows_the_interval(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.log_metrics(step=1, phase="sft", loss=1.0)
    run.log_metrics(step=2, phase="sft", loss=0.5)
    perfect = {"n": 4, "mean": 1.0, "ci95": [0.51, 1.0], "errors": {}, "scores": [1.0] * 4}
    before = {"n": 4, "mean": 0.25, "ci95": [0.05, 0.7], "errors": {"parse": 2}, "scores": [1.0, 0, 0, 0]}
    run.save_json(
        "job.json",
        {
            "kind": "finetune",
            "status": "done",
            "task": "fact_topic",
            "scores": {"baseline": {"dev": before}, "tuned": {"dev": perfect}},
            "data_card": {"runs_passed": 3, "runs_total": 4, "rows_train": 5, "rows_val": 1},
            "train_metrics": {"global_step": 4, "first_loss": 1.0, "last_loss": 0.5},
            "seconds": {"collect": 1.0},
        },
    )
    render_report(tmp_path)
    text = run.report_md.read_text()
    assert "BootstrapFinetune on fact_topic" in text
    assert "100.0 [51.0, 100.0]" in text and "parse=2" in text
    assert "+75.0 [" in text  # the paired difference on the same four examples
    assert "3/4 teacher runs passed" in text
    assert run.report_png.stat().st_size > 0
