"""``dspylite serve``: help text, bad input, and a full start -> ready -> Ctrl-C -> stop against the
fake vLLM process (tests/fake_vllm_server.py)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from serving_helpers import make_adapter
from typer.testing import CliRunner

from dspylite.cli import app
from dspylite.config_io import config_keys
from serving.config import ServerConfig
from serving.server import VLLMServer
from sources.models import SMOLLM2, SOURCES

FAKE_SCRIPT = Path(__file__).resolve().parents[1] / "fake_vllm_server.py"
runner = CliRunner()


def test_help_explains_serve() -> None:
    result = runner.invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # rich wraps lines
    for needle in ("[MODEL] [KEY=VALUE]", "--config", "server.dtype = 'auto'", "server.port", "Ctrl-C"):
        assert needle in text, needle
    # the server keys are the one schema every job's server: section has
    for key, _, _ in config_keys(ServerConfig):
        assert f"server.{key} = " in text, key


def test_top_level_help_lists_serve() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "serve" in result.output


def test_bad_adapter_spec_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", str(tmp_path), "--adapter", "no-equals-sign"])
    assert result.exit_code == 2
    assert "--adapter expects NAME=PATH, got 'no-equals-sign'" in result.output


def test_missing_model_dir_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", str(tmp_path / "nope"), f"run_dir={tmp_path / 'run'}"])
    assert result.exit_code == 2
    assert (
        f"model={str(tmp_path / 'nope')!r}: no such directory, and not a named model source" in result.output
    )


def test_a_remote_api_base_is_refused(model_dir: Path) -> None:
    result = runner.invoke(app, ["serve", str(model_dir), "server.api_base=http://127.0.0.1:9/v1"])
    assert result.exit_code == 2 and "leave it empty" in result.output


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return model


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[VLLMServer]:
    """The servers `dspylite serve` would start (prepared and checked, but not launched)."""
    servers: list[VLLMServer] = []
    monkeypatch.setattr(
        "serving.serve.serve_until_interrupted", lambda server, on_ready: servers.append(server)
    )
    return servers


def test_a_named_model_is_resolved_and_the_dtype_picked_like_a_jobs(
    model_dir: Path, started: list[VLLMServer], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from serving.dtype import serving_dtype

    built: list[str] = []

    def build_smollm2(say: object) -> Path:
        built.append("smollm2")
        return model_dir

    monkeypatch.setitem(SOURCES, SMOLLM2, build_smollm2)
    result = runner.invoke(app, ["serve", SMOLLM2, f"run_dir={tmp_path / 'run'}", "server.port=8123"])
    assert result.exit_code == 0, result.output
    (server,) = started
    assert built == ["smollm2"] and server.model == str(model_dir.resolve())
    assert server.dtype == serving_dtype(str(model_dir), None)  # server.dtype=auto: the jobs' rule
    command = server.command()
    assert command[command.index("--dtype") + 1] == server.dtype
    assert command[command.index("--port") + 1] == "8123"
    assert f"in {server.dtype}" in result.output


def test_server_keys_reach_the_vllm_command(
    model_dir: Path, started: list[VLLMServer], tmp_path: Path
) -> None:
    adapter = make_adapter(tmp_path / "sft-1", base_model=str(model_dir))
    result = runner.invoke(
        app,
        [
            "serve",
            str(model_dir),
            "server.dtype=bfloat16",
            "server.max_loras=2",
            "server.served_model_name=base",
            f"server.adapters.sft-1={adapter}",
            f"run_dir={tmp_path / 'run'}",
        ],
    )
    assert result.exit_code == 0, result.output
    command = " ".join(started[0].command())
    assert "--served-model-name base --dtype bfloat16" in command and "--max-loras 2" in command
    assert f"--lora-modules sft-1={adapter}" in command
    assert started[0].log_dir == tmp_path / "run"


def test_old_flags_still_work_and_name_their_new_keys(
    model_dir: Path, started: list[VLLMServer], tmp_path: Path
) -> None:
    adapter = make_adapter(tmp_path / "sft-1", base_model=str(model_dir))
    result = runner.invoke(
        app,
        [
            "serve",
            str(model_dir),
            "--adapter",
            f"sft-1={adapter}",
            "--max-loras",
            "3",
            "--run-dir",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"warning: --adapter is deprecated; use server.adapters.sft-1={adapter}" in result.output
    assert "warning: --max-loras is deprecated; use server.max_loras=3" in result.output
    assert f"warning: --run-dir is deprecated; use run_dir={tmp_path / 'run'}" in result.output
    (server,) = started
    assert server.max_loras == 3 and set(server.lora_modules) == {"sft-1"}


def test_serve_starts_prints_and_stops_on_ctrl_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text("{}")
    adapter = make_adapter(tmp_path / "sft-1", base_model=str(model))
    monkeypatch.setattr(VLLMServer, "entrypoint_argv", (str(FAKE_SCRIPT),))
    servers: list[VLLMServer] = []

    def ctrl_c(seconds: float) -> None:
        raise KeyboardInterrupt

    original_start = VLLMServer.start

    def recording_start(self: VLLMServer, wait: bool = True) -> VLLMServer:
        servers.append(self)
        return original_start(self, wait)

    monkeypatch.setattr("serving.serve._wait", ctrl_c)
    monkeypatch.setattr(VLLMServer, "start", recording_start)
    result = runner.invoke(
        app,
        [
            "serve",
            str(model),
            f"server.adapters.sft-1={adapter}",
            "server.served_model_name=tiny",
            f"run_dir={tmp_path / 'run'}",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "api_base: http://127.0.0.1:" in result.output
    assert "model: tiny (base model)" in result.output and "model: sft-1 (adapter)" in result.output
    assert "server stopped" in result.output
    assert (tmp_path / "run" / "vllm.log").exists()
    assert servers and not servers[0].is_running()


def test_sigterm_stops_the_cli_and_its_server(tmp_path: Path) -> None:
    """A plain `kill` of `dspylite serve` must not orphan vLLM (it runs in its own session)."""
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text("{}")
    script = (
        "import sys\n"
        "from serving.server import VLLMServer\n"
        f"VLLMServer.entrypoint_argv = ({str(FAKE_SCRIPT)!r},)\n"
        "from dspylite.cli import main\n"
        f"sys.argv = ['dspylite', 'serve', {str(model)!r}, 'run_dir=' + {str(tmp_path / 'run')!r}]\n"
        "main()\n"
    )
    repo = Path(__file__).resolve().parents[2]
    cli = subprocess.Popen(
        [sys.executable, "-c", script], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    log = tmp_path / "run" / "vllm.log"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (log.exists() and "fake vllm healthy" in log.read_text()):
        time.sleep(0.1)
    text = log.read_text()
    worker_pid = int(re.search(r"worker pid (\d+)", text).group(1))
    time.sleep(0.5)  # let the CLI reach its wait loop
    cli.send_signal(signal.SIGTERM)
    output, _ = cli.communicate(timeout=30)
    assert "server stopped" in output, output
    deadline = time.monotonic() + 10
    while _alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker_pid), "vLLM's worker outlived the CLI"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (ProcessLookupError, OSError):
        return False
