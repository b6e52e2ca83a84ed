"""Every YAML recipe in configs/ opens with the command that runs it and loads into its typed config,
whose fields all carry help text."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from dspylite.config_io import load_config
from dspylite.jobs.tasks import load_object

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"

# Every recipe and the dataclass its fields map to. A new file in configs/ must be added here.
DSPYLITE_CONFIGS = {
    "serve.yaml": "serving.serve:ServeConfig",
    "eval.yaml": "dspylite.jobs.eval_job:EvalJobConfig",
    "optimize.yaml": "dspylite.jobs.optimize_job:OptimizeJobConfig",
    "sft.yaml": "finetune.job:FinetuneJobConfig",
    "grpo.yaml": "rl.job:GRPOJobConfig",
    "better_together.yaml": "dspylite.jobs.better_together_job:BetterTogetherJobConfig",
    "demo.yaml": "dspylite.demo:DemoConfig",
    "demo_real.yaml": "dspylite.demo:DemoConfig",
    "multi_gpu/serve_tp_dp.yaml": "serving.serve:ServeConfig",
    "multi_gpu/sft_accelerate.yaml": "finetune.train:SFTTrainJobConfig",
}
# accelerate's own launch configs (accelerate.commands.config.config_args.ClusterConfig).
ACCELERATE_CONFIGS = {"multi_gpu/accelerate_ddp.yaml": "MULTI_GPU", "multi_gpu/accelerate_fsdp.yaml": "FSDP"}


def _all_yaml() -> list[str]:
    return sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.y*ml"))


def test_every_config_file_is_mapped_to_a_config_class() -> None:
    assert _all_yaml() == sorted([*DSPYLITE_CONFIGS, *ACCELERATE_CONFIGS])


@pytest.mark.parametrize("name", _all_yaml())
def test_config_opens_with_the_command_that_runs_it(name: str) -> None:
    first = (CONFIGS / name).read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# "), f"{name} must open with a comment"
    command = first[2:].strip()
    assert command.startswith(("dspylite ", "accelerate launch ")), f"{name}: {first!r}"
    assert f"configs/{name}" in command, f"{name}: the command must name the file itself: {first!r}"


@pytest.mark.parametrize("name", sorted(DSPYLITE_CONFIGS))
def test_config_loads_into_its_dataclass_and_every_key_has_help(name: str) -> None:
    cls = load_object(DSPYLITE_CONFIGS[name], (), "config class")
    cfg = load_config(cls, CONFIGS / name)
    assert isinstance(cfg, cls)
    raw = yaml.safe_load((CONFIGS / name).read_text(encoding="utf-8"))
    _check_keys_have_help(cls, raw, name)


def _check_keys_have_help(cls: type, data: dict[str, Any], where: str) -> None:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in data.items():
        assert key in fields, f"{where}: {key} is not a field of {cls.__name__}"
        assert fields[key].metadata.get("help"), f"{where}: {cls.__name__}.{key} has no help text"
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            _check_keys_have_help(hints[key], value, f"{where}:{key}")


def test_overrides_apply_on_top_of_a_config_file() -> None:
    from dspylite.jobs.optimize_job import OptimizeJobConfig

    cfg = load_config(OptimizeJobConfig, CONFIGS / "optimize.yaml", ["optimizer.kind=mipro", "task.n_dev=50"])
    assert cfg.optimizer.kind == "mipro" and cfg.task.n_dev == 50
    assert cfg.optimizer.max_bootstrapped_demos == 2  # untouched keys keep the file's values


def test_serve_tp_dp_passes_parallelism_flags_to_vllm() -> None:
    from serving.serve import ServeConfig

    cfg = load_config(ServeConfig, CONFIGS / "multi_gpu" / "serve_tp_dp.yaml")
    args = cfg.extra_args
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[args.index("--data-parallel-size") + 1] == "2"


@pytest.mark.parametrize("name", sorted(ACCELERATE_CONFIGS))
def test_accelerate_config_is_read_by_accelerate(name: str) -> None:
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    cfg = load_config_from_file(str(CONFIGS / name))
    assert isinstance(cfg, ClusterConfig)
    assert str(cfg.distributed_type).endswith(ACCELERATE_CONFIGS[name])
    known = {f.name for f in dataclasses.fields(ClusterConfig)}
    raw = yaml.safe_load((CONFIGS / name).read_text(encoding="utf-8"))
    assert set(raw) <= known, f"{name}: keys accelerate does not know: {set(raw) - known}"
    if ACCELERATE_CONFIGS[name] == "FSDP":
        assert cfg.fsdp_config["fsdp_version"] == 2


def test_automatic_thread_count(monkeypatch) -> None:
    from finetune.config import resolve_threads

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert resolve_threads(3) == 3  # an explicit count wins
    assert resolve_threads(0) == 4  # SFT: the server idles while the adapter trains
    assert resolve_threads(0, share_with_server=True) == 2  # GRPO: vLLM keeps working
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert resolve_threads(0) == 1 and resolve_threads(0, share_with_server=True) == 1


def test_demo_section_overrides_resolve_against_their_configs() -> None:
    """The demo's sft_overrides / grpo_overrides are relative to the sft: and grpo: sections."""
    from dspylite.demo import DemoConfig, _load_grpo_config, _load_sft_config

    cfg = load_config(DemoConfig, CONFIGS / "demo.yaml", [])
    assert _load_sft_config(cfg).threads == 2
    sft_grpo = _load_grpo_config(cfg, cfg.grpo_overrides)
    assert (sft_grpo.num_steps, sft_grpo.temperature, sft_grpo.learning_rate) == (10, 0.7, 5e-4)
    # The GRPO-from-base stage runs configs/grpo.yaml's own (measured, from-base) recipe.
    from_base = _load_grpo_config(cfg, cfg.grpo_base_overrides)
    assert (from_base.num_steps, from_base.temperature, from_base.learning_rate) == (60, 0.5, 1e-3)
    # The dataclass defaults are the YAML's, so a demo run without the YAML measures the same thing.
    defaults = DemoConfig()
    assert (defaults.grpo_overrides, defaults.grpo_base_overrides, defaults.stages) == (
        cfg.grpo_overrides,
        cfg.grpo_base_overrides,
        cfg.stages,
    )
    wrong = load_config(DemoConfig, CONFIGS / "demo.yaml", ["sft_overrides=[sft.threads=2]"])
    with pytest.raises(Exception, match="sft"):
        _load_sft_config(wrong)


def test_demo_stages_have_titles_and_distinct_chart_labels() -> None:
    from dspylite.demo import ALL_STAGES, STAGE_LABELS, STAGE_TITLES

    assert set(STAGE_TITLES) == set(STAGE_LABELS) == set(ALL_STAGES)
    assert len(set(STAGE_LABELS.values())) == len(ALL_STAGES)
