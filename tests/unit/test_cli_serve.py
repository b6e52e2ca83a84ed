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
from serving.server import VLLMServer

FAKE_SCRIPT = Path(__file__).resolve().parents[1] / "fake_vllm_server.py"
runner = CliRunner()


def test_help_explains_serve() -> None:
    result = runner.invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for text in ("MODEL_DIR", "NAME=PATH", "--max-lora-rank", "--api-key", "--run-dir", "Ctrl-C"):
        assert text in result.output


def test_top_level_help_lists_serve() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "serve" in result.output


def test_bad_adapter_spec_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", str(tmp_path), "--adapter", "no-equals-sign"])
    assert result.exit_code == 2
    assert "--adapter expects NAME=PATH, got 'no-equals-sign'" in result.output


def test_missing_model_dir_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", str(tmp_path / "nope"), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "model directory" in result.output and "does not exist" in result.output


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
            "--adapter",
            f"sft-1={adapter}",
            "--served-model-name",
            "tiny",
            "--run-dir",
            str(tmp_path / "run"),
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
        f"sys.argv = ['dspylite', 'serve', {str(model)!r}, '--run-dir', {str(tmp_path / 'run')!r}]\n"
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
