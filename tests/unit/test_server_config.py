"""The one server schema (serving.config.ServerConfig): every job's `server:` section and `dspylite serve`
read it, bad values are refused naming the key, old serve.yaml keys still work with a warning, and
serving.launch turns it into the vLLM command."""

from __future__ import annotations

import logging
import typing
from pathlib import Path

import pytest

from dspylite.config_io import load_config
from dspylite.errors import ConfigError
from serving.config import ServerConfig
from serving.launch import api_key, server_model, vllm_server
from serving.serve import LEGACY_SERVER_KEYS, ServeConfig, load_serve_config

JOB_CONFIGS = [
    "dspylite.jobs.eval_job:EvalJobConfig",
    "dspylite.jobs.optimize_job:OptimizeJobConfig",
    "dspylite.jobs.finetune_job:FinetuneJobConfig",
    "dspylite.jobs.grpo_job:GRPOJobConfig",
    "dspylite.jobs.better_together_job:BetterTogetherJobConfig",
    "dspylite.jobs.demo_job:DemoConfig",
]


@pytest.mark.parametrize("name", [*JOB_CONFIGS, "serving.serve:ServeConfig"])
def test_every_job_and_serve_use_the_one_schema(name: str) -> None:
    from dspylite.jobs.tasks import load_object

    cls = load_object(name, (), "config class")
    assert typing.get_type_hints(cls)["server"] is ServerConfig


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("server.max_lora_rank=0", "server.max_lora_rank must be > 0, got 0"),
        ("server.max_loras=-1", "server.max_loras must be > 0"),
        ("server.port=70000", "server.port must be in 1..65535"),
        ("server.dtype=fp8", r"server.dtype must be one of \['auto', 'float32', 'bfloat16', 'float16'\]"),
        ("server.gpu_memory_utilization=1.5", "server.gpu_memory_utilization must be in \\(0, 1\\]"),
        ("server.tensor_parallel_size=0", "server.tensor_parallel_size must be > 0"),
        ("server.colocate=nap", r"server.colocate must be one of \['auto', 'sleep', 'split', 'off'\]"),
        ("server.prot=8000", r"unknown key\(s\) \['server.prot'\]"),
        ("server.host=", "server.host is empty"),
    ],
)
def test_bad_server_values_are_refused_naming_the_key(override: str, message: str) -> None:
    from dspylite.jobs.eval_job import EvalJobConfig

    with pytest.raises(ConfigError, match=message):
        load_config(EvalJobConfig, None, [override])
    with pytest.raises(ConfigError, match=message):
        load_serve_config(None, [override], model="tiny")


def test_old_flat_serve_keys_move_under_server_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = tmp_path / "serve.yaml"
    old.write_text(
        "model: tiny\nport: 8123\nmax_loras: 2\napi_key: null\nserved_model_name: null\n"
        "extra_args: ['--max-model-len', '512']\nrun_dir: null\n"
    )
    with caplog.at_level(logging.WARNING, logger="serving.serve"):
        cfg = load_serve_config(old)
    assert (cfg.model, cfg.run_dir) == ("tiny", None)
    assert (cfg.server.port, cfg.server.max_loras, cfg.server.api_key) == (8123, 2, None)
    assert cfg.server.extra_args == ["--max-model-len", "512"]
    warned = {r.getMessage() for r in caplog.records}
    for key in ("port", "max_loras", "api_key", "served_model_name", "extra_args"):
        assert f"{old}: serve key {key!r} is now server.{key}; please rename it" in warned
    assert set(LEGACY_SERVER_KEYS) <= {f.name for f in ServerConfig.__dataclass_fields__.values()}


def test_an_old_key_and_its_new_one_together_are_refused(tmp_path: Path) -> None:
    both = tmp_path / "serve.yaml"
    both.write_text("model: tiny\nport: 1\nserver:\n  port: 2\n")
    with pytest.raises(ConfigError, match="port and server.port are both given; keep server.port"):
        load_serve_config(both)


def test_doctor_reads_only_the_server_part_of_a_job_config(tmp_path: Path) -> None:
    job = tmp_path / "sft.yaml"
    job.write_text("run_dir: runs/x\nmodel: tiny\ntask: {name: fact_qa}\nserver:\n  max_lora_rank: 32\n")
    cfg = load_serve_config(job, ["server.max_loras=6"], server_only=True)
    assert (cfg.model, cfg.server.max_lora_rank, cfg.server.max_loras) == ("tiny", 32, 6)
    with pytest.raises(ConfigError, match="unknown key"):
        load_serve_config(job)  # as a serve config, the job's other sections are not serve keys


def test_the_schema_becomes_the_vllm_command(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    config = ServerConfig(
        host="0.0.0.0",
        port=8001,
        served_model_name="base",
        dtype="float16",
        max_lora_rank=32,
        max_loras=6,
        tensor_parallel_size=2,
        devices="0,1",
        gpu_memory_utilization=0.5,
        extra_args=["--max-model-len", "512"],
    )
    server = vllm_server(str(tmp_path), config)
    command = " ".join(server.command())
    for part in (
        "--host 0.0.0.0 --port 8001 --served-model-name base --dtype float16",
        "--max-lora-rank 32 --max-loras 6",
        "--tensor-parallel-size 2 --gpu-memory-utilization 0.50 --max-model-len 512",
    ):
        assert part in command
    assert server.child_env()["CUDA_VISIBLE_DEVICES"] == "0,1"
    # a placement (sleep mode, a computed memory split) wins over the config's own value
    placed = vllm_server(str(tmp_path), config, gpu_memory_utilization=0.3, enable_sleep_mode=True)
    assert "--gpu-memory-utilization 0.30" in " ".join(placed.command()) and placed.enable_sleep_mode


def test_api_key_from_the_config_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSPYLITE_API_KEY", raising=False)
    assert api_key(ServerConfig()) is None
    monkeypatch.setenv("DSPYLITE_API_KEY", "from-env")
    assert api_key(ServerConfig()) == "from-env"
    assert api_key(ServerConfig(api_key="given")) == "given"


def test_the_model_is_resolved_unless_a_remote_server_needs_none(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert server_model(str(tmp_path), ServerConfig()) == str(tmp_path.resolve())
    assert server_model("", ServerConfig(api_base="http://127.0.0.1:9/v1")) == ""
    with pytest.raises(ConfigError, match="not a named model source"):
        server_model(str(tmp_path / "nope"), ServerConfig())


def test_serve_yaml_restates_the_schema_defaults() -> None:
    root = Path(__file__).resolve().parents[2]
    cfg = load_serve_config(root / "configs" / "serve.yaml")
    assert cfg.server == ServerConfig() and cfg.model == "smollm2-135m-instruct"
    assert isinstance(cfg, ServeConfig)


def test_a_command_line_key_wins_over_an_old_file_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = tmp_path / "serve.yaml"
    old.write_text("model: tiny\nport: 8000\n")
    with caplog.at_level(logging.WARNING, logger="serving.serve"):
        assert load_serve_config(old, ["server.port=9000"]).server.port == 9000
        assert load_serve_config(old, ["port=9001"]).server.port == 9001  # an old key on the command line
    assert "command line: serve key 'port' is now server.port; please rename it" in caplog.text


def test_a_job_starts_its_server_through_the_shared_set_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """open_session starts (and stops) the server serving.launch builds from the job's `server:` section."""
    from serving_helpers import make_adapter

    from dspylite.jobs.eval_job import EvalJobConfig
    from dspylite.jobs.session import open_session
    from serving.server import VLLMServer

    fake = Path(__file__).resolve().parents[1] / "fake_vllm_server.py"
    monkeypatch.setattr(VLLMServer, "entrypoint_argv", (str(fake),))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    adapter = make_adapter(tmp_path / "sft-1", base_model=str(model))
    cfg = load_config(
        EvalJobConfig,
        None,
        [
            f"run_dir={tmp_path / 'run'}",
            f"model={model}",
            "server.dtype=float32",
            "server.max_loras=3",
            "server.served_model_name=base",
            f"server.adapters.sft-1={adapter}",
            "server.startup_timeout=30",
            "lm.cache=false",
        ],
    )
    with open_session("eval", cfg) as session:
        server = session.server
        assert isinstance(server, VLLMServer) and server.is_running()
        assert set(server.served_models()) == {"base", "sft-1"}
        assert session.backend.colocation.mode == "off"
    assert not server.is_running()
    log = (tmp_path / "run" / "vllm.log").read_text()
    assert "--served-model-name base --dtype float32" in log and "--max-loras 3" in log
