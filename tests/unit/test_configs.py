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
from dspylite.errors import ConfigError
from dspylite.jobs.tasks import load_object

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"

# Every recipe and the dataclass its fields map to. A new file in configs/ must be added here.
DSPYLITE_CONFIGS = {
    "serve.yaml": "serving.serve:ServeConfig",
    "eval.yaml": "dspylite.jobs.eval_job:EvalJobConfig",
    "optimize.yaml": "dspylite.jobs.optimize_job:OptimizeJobConfig",
    "sft.yaml": "dspylite.jobs.finetune_job:FinetuneJobConfig",
    "grpo.yaml": "dspylite.jobs.grpo_job:GRPOJobConfig",
    "better_together.yaml": "dspylite.jobs.better_together_job:BetterTogetherJobConfig",
    "demo.yaml": "dspylite.jobs.demo_job:DemoConfig",
    "demo_real.yaml": "dspylite.jobs.demo_job:DemoConfig",
    "asdiv_real.yaml": "dspylite.jobs.demo_job:DemoConfig",
    "boolq_real.yaml": "dspylite.jobs.demo_job:DemoConfig",
    "sst2_real.yaml": "dspylite.jobs.demo_job:DemoConfig",
    "multi_gpu/serve_tp.yaml": "serving.serve:ServeConfig",
    "multi_gpu/sft_accelerate.yaml": "finetune.train:SFTTrainJobConfig",
    "multi_gpu/grpo_one_gpu_sleep.yaml": "dspylite.jobs.grpo_job:GRPOJobConfig",
    "multi_gpu/grpo_one_gpu_split.yaml": "dspylite.jobs.grpo_job:GRPOJobConfig",
    "multi_gpu/grpo_tp2_replicas2.yaml": "dspylite.jobs.grpo_job:GRPOJobConfig",
    "multi_gpu/grpo_two_gpus.yaml": "dspylite.jobs.grpo_job:GRPOJobConfig",
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


def test_serve_tp_passes_parallelism_flags_to_vllm(tmp_path: Path) -> None:
    from serving.launch import vllm_server
    from serving.serve import ServeConfig

    cfg = load_config(ServeConfig, CONFIGS / "multi_gpu" / "serve_tp.yaml")
    (tmp_path / "config.json").write_text("{}")
    args = vllm_server(str(tmp_path), cfg.server).command()
    assert args[args.index("--tensor-parallel-size") + 1] == "4"
    assert "--data-parallel-size" not in args
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.90"
    assert args[args.index("--max-model-len") + 1] == "8192"
    assert vllm_server(str(tmp_path), cfg.server).child_env()["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"


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


def test_yaml_recipes_restate_their_dataclass_defaults() -> None:
    """One policy: the dataclass defaults are the measured recipe and the YAML says the same."""
    import dataclasses

    from dspylite.jobs.demo_job import DemoConfig
    from finetune.config import FinetuneConfig
    from rl.config import GRPOConfig

    demo = load_config(DemoConfig, CONFIGS / "demo.yaml", [])
    assert dataclasses.asdict(demo) == dataclasses.asdict(DemoConfig())
    assert demo.sft.threads == 2
    assert (demo.sft_grpo.num_steps, demo.sft_grpo.temperature, demo.sft_grpo.learning_rate) == (
        10,
        0.7,
        5e-4,
    )
    assert (demo.grpo.num_steps, demo.grpo.temperature, demo.grpo.learning_rate) == (60, 0.5, 1e-3)
    grpo = load_config(GRPOConfig, CONFIGS / "grpo.yaml", [], section="grpo")
    expected = dataclasses.replace(GRPOConfig(), init_adapter="base")  # the job starts from a fresh LoRA
    assert dataclasses.asdict(grpo) == dataclasses.asdict(expected)
    sft = load_config(FinetuneConfig, CONFIGS / "sft.yaml", [], section="sft")
    assert dataclasses.asdict(sft) == dataclasses.asdict(FinetuneConfig())


def test_a_section_is_read_with_overrides_relative_to_it_and_a_missing_one_is_named() -> None:
    from rl.config import GRPOConfig

    cfg = load_config(GRPOConfig, CONFIGS / "grpo.yaml", ["num_steps=3", "lora.r=8"], section="grpo")
    assert (cfg.num_steps, cfg.lora.r, cfg.temperature) == (3, 8, 0.5)
    with pytest.raises(ConfigError, match="no 'grpo' section"):
        load_config(GRPOConfig, CONFIGS / "eval.yaml", [], section="grpo")


def test_demo_stages_have_titles_and_distinct_chart_labels() -> None:
    from dspylite.jobs.report_job import DEMO_STAGE_LABELS, DEMO_STAGE_TITLES, DEMO_STAGES

    assert set(DEMO_STAGE_TITLES) == set(DEMO_STAGE_LABELS) == set(DEMO_STAGES)
    assert len(set(DEMO_STAGE_LABELS.values())) == len(DEMO_STAGES)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("task.n_test=.inf", "task.n_test must be a finite number"),
        ("task.n_test=1e999", "task.n_test must be a finite number"),
        ("task.n_test=2.5", "task.n_test must be a whole number"),
        ("lm.temperature=nan", "lm.temperature must be a finite number"),
        ("lm.num_threads=-1", "lm.num_threads must be > 0"),
        ("lm.max_tokens=0", "lm.max_tokens must be > 0"),
        ("lm.temperature=-0.5", "lm.temperature must be >= 0"),
    ],
)
def test_bad_numbers_are_refused_naming_the_key(override: str, message: str) -> None:
    from dspylite.jobs.eval_job import EvalJobConfig

    with pytest.raises(ConfigError, match=message):
        load_config(EvalJobConfig, CONFIGS / "eval.yaml", [override])


def test_whole_floats_still_load_as_ints() -> None:
    from dspylite.jobs.eval_job import EvalJobConfig

    assert load_config(EvalJobConfig, CONFIGS / "eval.yaml", ["task.n_test=20.0"]).task.n_test == 20


# The second spelling is the key's old name, which config_io moves to the new one.
@pytest.mark.parametrize(
    "candidates", ["prompt.random_search.num_candidate_programs=2", "prompt.num_candidate_programs=2"]
)
def test_a_partial_section_keeps_the_fields_own_defaults(candidates: str) -> None:
    """An override of one key of a section whose default is a configured instance keeps the rest."""
    from dspylite.jobs.demo_job import DemoConfig

    cfg = load_config(DemoConfig, None, [candidates, "lm.num_threads=2", "task.n_train=8"])
    assert (
        cfg.prompt.kind,
        cfg.prompt.random_search.num_candidate_programs,
        cfg.prompt.max_labeled_demos,
    ) == (
        "random_search",
        2,
        0,
    )
    assert (cfg.lm.max_tokens, cfg.lm.num_threads) == (512, 2)
    assert (cfg.task.n_train, cfg.task.n_dev, cfg.task.n_test) == (8, 400, 400)
    sft_grpo = load_config(DemoConfig, None, ["sft_grpo.num_steps=3"]).sft_grpo
    assert (sft_grpo.num_steps, sft_grpo.temperature, sft_grpo.learning_rate) == (3, 0.7, 5e-4)


def test_gepa_from_the_optimize_config_and_its_budget_rule() -> None:
    from dspylite.jobs.optimize_job import OptimizeJobConfig
    from dspylite.jobs.session import build_prompt_optimizer
    from dspylite.lm import LM
    from dspylite.optimizers import GEPA

    cfg = load_config(
        OptimizeJobConfig,
        CONFIGS / "optimize.yaml",
        [
            "optimizer.kind=gepa",
            "optimizer.gepa.auto=none",
            "optimizer.gepa.max_metric_calls=40",
            "optimizer.gepa.use_merge=false",
        ],
    )
    task_lm = LM("tiny", api_base="http://127.0.0.1:9/v1", temperature=0.0, max_tokens=96)
    gepa = build_prompt_optimizer(cfg.optimizer, lambda e, p, t=None: 1.0, "unused-run-dir", 4, lm=task_lm)
    assert isinstance(gepa, GEPA)
    assert (
        gepa.reflection_lm.model == "tiny" and gepa.reflection_lm.temperature == 1.0
    )  # the task LM, sampling
    elsewhere = load_config(
        OptimizeJobConfig,
        CONFIGS / "optimize.yaml",
        [
            "optimizer.kind=gepa",
            "optimizer.gepa.reflection_api_base=http://10.0.0.9:8000/v1",
            "optimizer.gepa.reflection_model=big",
        ],
    )
    other = build_prompt_optimizer(elsewhere.optimizer, lambda e, p, t=None: 1.0, "unused", 4, lm=task_lm)
    assert other.reflection_lm.model == "big" and "10.0.0.9" in str(other.reflection_lm.api_base)
    with pytest.raises(ConfigError, match=r"exactly one budget: optimizer\.gepa\.auto=light"):
        load_config(
            OptimizeJobConfig,
            CONFIGS / "optimize.yaml",
            ["optimizer.kind=gepa", "optimizer.gepa.max_metric_calls=40"],
        )


@pytest.mark.parametrize(
    ("config", "override", "named"),
    [
        (
            "grpo.yaml",
            "grpo.model_path=/models/x",
            r"grpo\.model_path is no longer a setting.*top-level `model`",
        ),
        ("grpo.yaml", "grpo.run_dir=runs/x", r"grpo\.run_dir is no longer a setting.*top-level `run_dir`"),
        (
            "sft.yaml",
            "sft.model_path=/models/x",
            r"sft\.model_path is no longer a setting.*top-level `model`",
        ),
        ("sft.yaml", "sft.run_dir=runs/x", r"sft\.run_dir is no longer a setting.*top-level `run_dir`"),
    ],
)
def test_keys_the_job_decides_are_refused_naming_what_to_use(config: str, override: str, named: str) -> None:
    """sft/grpo model_path and run_dir were listed by --help and then replaced by the job; now a file
    or override that sets one fails and says which key decides it, instead of being ignored."""
    from dspylite.jobs.finetune_job import FinetuneJobConfig
    from dspylite.jobs.grpo_job import GRPOJobConfig

    cls = GRPOJobConfig if config == "grpo.yaml" else FinetuneJobConfig
    with pytest.raises(ConfigError, match=named):
        load_config(cls, ROOT / "configs" / config, [override])


GPU_GRPO_CONFIGS = [name for name in DSPYLITE_CONFIGS if name.startswith("multi_gpu/grpo_")]


@pytest.mark.parametrize("name", GPU_GRPO_CONFIGS)
def test_gpu_grpo_configs_carry_the_real_model_recipe(name: str) -> None:
    """Not the tiny model's recipe (lr 1e-3, T=0.5, ChatAdapter): SmolLM2's measured one (demo_real.yaml)."""
    from dspylite.jobs.demo_job import DemoConfig
    from dspylite.jobs.grpo_job import GRPOJobConfig

    cfg = load_config(GRPOJobConfig, CONFIGS / name)
    real = load_config(DemoConfig, CONFIGS / "demo_real.yaml")
    assert cfg.model == real.model == "smollm2-135m-instruct"
    assert (cfg.lm.adapter, cfg.lm.max_tokens) == (real.lm.adapter, real.lm.max_tokens) == ("json", 48)
    measured = ("learning_rate", "temperature", "examples_per_step", "num_rollouts_per_example", "max_tokens")
    assert {k: getattr(cfg.grpo, k) for k in measured} == {k: getattr(real.grpo, k) for k in measured}
    assert cfg.grpo.learning_rate < load_config(GRPOJobConfig, CONFIGS / "grpo.yaml").grpo.learning_rate
    assert cfg.grpo.lora.r <= cfg.server.max_lora_rank
