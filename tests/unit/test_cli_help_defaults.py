"""``--help`` shows the values a command would run with: the job config's defaults (a section's
default_factory, not its class's bare defaults), or, with a config file and overrides beside --help,
the values after loading them, through the loader the job itself calls."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dspylite.cli import app
from dspylite.config_io import config_keys, load_config
from dspylite.jobs.tasks import load_object

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
runner = CliRunner()
WIDE = {"COLUMNS": "4000", "TERMINAL_WIDTH": "4000"}  # one line per key

# command -> (its job config, the recipe it is usually given)
JOBS = {
    "eval": ("dspylite.jobs.eval_job:EvalJobConfig", "eval.yaml"),
    "optimize": ("dspylite.jobs.optimize_job:OptimizeJobConfig", "optimize.yaml"),
    "finetune": ("dspylite.jobs.finetune_job:FinetuneJobConfig", "sft.yaml"),
    "grpo": ("dspylite.jobs.grpo_job:GRPOJobConfig", "multi_gpu/grpo_one_gpu_sleep.yaml"),
    "better-together": ("dspylite.jobs.better_together_job:BetterTogetherJobConfig", "better_together.yaml"),
    "demo": ("dspylite.jobs.demo_job:DemoConfig", "demo_real.yaml"),
}


def _help(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    return result.output


def _shown(output: str, config: object) -> None:
    """Every key's line in ``output`` carries the value ``config`` holds."""
    for key, value, _ in config_keys(config):
        if key.endswith("api_key") and value:
            value = "<set>"
        assert f" {key} = {value!r}:" in output, f"--help does not show {key} = {value!r}"


@pytest.mark.parametrize("command", sorted(JOBS))
def test_help_shows_the_defaults_the_job_runs_with(command: str) -> None:
    cls = load_object(JOBS[command][0], (), "config class")
    output = _help(command)
    assert "with the defaults:" in output
    _shown(output, load_config(cls, None, []))  # what run_<job>(None) loads


@pytest.mark.parametrize("command", sorted(JOBS))
def test_help_with_a_config_file_and_overrides_shows_their_values(command: str) -> None:
    cls = load_object(JOBS[command][0], (), "config class")
    path = str(CONFIGS / JOBS[command][1])
    output = _help(command, path, "task.n_dev=7", "run_dir=runs/help-check")
    assert f"with the values of {path} task.n_dev=7 run_dir=runs/help-check:" in output
    loaded = load_config(cls, path, ["task.n_dev=7", "run_dir=runs/help-check"])
    _shown(output, loaded)
    assert " task.n_dev = 7:" in output and " run_dir = 'runs/help-check':" in output


def test_demo_help_shows_democonfig_not_the_section_classes() -> None:
    """The issue's case: the section classes say 200 / 256 / T=0.5, the demo runs 2000 / 512 / T=0.7."""
    output = _help("demo")
    for line in (
        " task.n_train = 2000:",
        " task.n_test = 400:",
        " lm.max_tokens = 512:",
        " sft_grpo.num_steps = 10:",
        " sft_grpo.temperature = 0.7:",
        " prompt.kind = 'random_search':",
    ):
        assert line in output, line
    real = _help("demo", str(CONFIGS / "demo_real.yaml"))
    assert (
        " lm.adapter = 'json':" in real
        and " task.n_train = 300:" in real
        and " grpo.learning_rate = 0.0005:" in real
    )


def test_serve_and_doctor_help_read_their_config_option(tmp_path: Path) -> None:
    from serving.serve import load_serve_config

    path = str(CONFIGS / "multi_gpu" / "serve_tp.yaml")
    output = _help("serve", "--config", path, "server.port=9000")
    _shown(output, load_serve_config(path, ["server.port=9000"]))
    assert " server.devices = '0,1,2,3':" in output and " server.port = 9000:" in output
    secret = tmp_path / "serve.yaml"
    secret.write_text("model: tiny\nserver:\n  api_key: hunter2\n")
    shown = _help("doctor", "-c", str(secret))
    assert " server.api_key = '<set>':" in shown and "hunter2" not in shown


def test_a_config_that_does_not_load_falls_back_to_the_defaults_and_says_why() -> None:
    output = _help("eval", "no-such-file.yaml")
    assert "with the defaults (config file not found: no-such-file.yaml):" in output
    assert " split = " in output


def test_finetune_train_help_shows_the_config_it_is_given(capsys: pytest.CaptureFixture[str]) -> None:
    from finetune.train import SFTTrainJobConfig, main

    path = str(CONFIGS / "multi_gpu" / "sft_accelerate.yaml")
    assert main([path, "sft.max_length=512", "--help"]) == 0
    output = capsys.readouterr().out
    _shown(output, load_config(SFTTrainJobConfig, path, ["sft.max_length=512"]))
    assert "  sft.max_length = 512:" in output
    assert main(["--help"]) == 0
    _shown(capsys.readouterr().out, SFTTrainJobConfig())
