"""Issue 14, items 1 and 5 against the fake vLLM (tests/fake_vllm_server.py), launched through the
same VLLMServer path as the real one (python -m serving._vllm_entry): the API key never reaches
argv, and the server's whole process group dies with its owner (SIGKILL, SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dspylite.errors import LMRequestError
from dspylite.lm import LM
from serving import VLLMServer

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO = TESTS_DIR.parent
FAKE_SCRIPT = TESTS_DIR / "fake_vllm_server.py"
KEY = "sk-dspylite-test-0123456789abcdef"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


class FakeProcessServer(VLLMServer):
    entrypoint_argv = (str(FAKE_SCRIPT),)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


# ---- item 1: the key travels in the environment ------------------------------------------------


def test_command_and_env_keep_the_key_off_argv(base_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeProcessServer(base_dir, api_key=KEY, port=8123)
    assert not any(KEY in arg for arg in server.command())
    assert "--api-key" not in server.command()
    assert server.child_env()["VLLM_API_KEY"] == KEY
    # A key inherited from this process's environment would lock our own (keyless) client out.
    monkeypatch.setenv("VLLM_API_KEY", "inherited")
    assert "VLLM_API_KEY" not in FakeProcessServer(base_dir, port=8123).child_env()


def test_running_server_processes_have_no_key_in_argv(base_dir: Path, tmp_path: Path) -> None:
    with FakeProcessServer(
        base_dir, served_model_name="tiny", api_key=KEY, log_dir=tmp_path, startup_timeout=30
    ) as server:
        members = group_members(server.pid)
        assert server.pid in members and len(members) >= 2  # the server and its "engine worker"
        for pid in members:
            assert KEY.encode() not in cmdline(pid)
        assert KEY not in server.log_path.read_text()
        assert server.lm("tiny", cache=False)("hi") == ["tiny echoes: hi"]
        with pytest.raises(LMRequestError, match="HTTP 401"):
            LM("tiny", api_base=server.api_base, api_key="EMPTY", cache=False, num_retries=0)("hi")


# ---- item 5: the server dies with its owner ------------------------------------------------------

OWNER = textwrap.dedent(
    """
    import sys, threading, time
    from serving import VLLMServer

    class Fake(VLLMServer):
        entrypoint_argv = (sys.argv[1],)

    server = Fake(sys.argv[2], log_dir=sys.argv[3], startup_timeout=60)
    if sys.argv[4] == "thread":
        # Started from a worker thread that then ends while the process lives on: with
        # PR_SET_PDEATHSIG this would kill the server; the owner watchdog must not.
        worker = threading.Thread(target=server.start)
        worker.start()
        worker.join()
    else:
        server.start()
    print(server.pid, flush=True)
    time.sleep(600)
    """
)


def start_owner(base_dir: Path, tmp_path: Path, mode: str) -> tuple[subprocess.Popen, int]:
    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    owner = subprocess.Popen(
        [sys.executable, str(script), str(FAKE_SCRIPT), str(base_dir), str(tmp_path / "log"), mode],
        stdout=subprocess.PIPE,
        env=env,
    )
    line = owner.stdout.readline()
    assert line.strip().isdigit(), f"owner did not start its server: {line!r}"
    return owner, int(line)


def test_sigkill_of_the_owner_takes_the_whole_server_group_down(base_dir: Path, tmp_path: Path) -> None:
    owner, server_pid = start_owner(base_dir, tmp_path, "thread")
    try:
        time.sleep(1.5)  # three watchdog polls after the starting thread ended
        assert len(group_members(server_pid)) >= 2, "the server died with the thread that started it"
        owner.kill()
        owner.wait(timeout=10)
        assert wait_until(lambda: not group_members(server_pid), timeout=8), group_members(server_pid)
    finally:
        owner.kill()
        for pid in group_members(server_pid):
            os.kill(pid, signal.SIGKILL)


def test_sigterm_of_the_owner_stops_the_server_and_the_owner_dies_of_it(
    base_dir: Path, tmp_path: Path
) -> None:
    owner, server_pid = start_owner(base_dir, tmp_path, "main")
    try:
        assert len(group_members(server_pid)) >= 2
        owner.terminate()
        assert owner.wait(timeout=30) == -signal.SIGTERM  # the default action still happens
        # The handler waited for the server before the owner died: nothing is left at once.
        assert wait_until(lambda: not group_members(server_pid), timeout=2), group_members(server_pid)
    finally:
        owner.kill()
        for pid in group_members(server_pid):
            os.kill(pid, signal.SIGKILL)


def test_sigterm_handler_is_chained_and_restored(base_dir: Path, tmp_path: Path) -> None:
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        mine = signal.getsignal(signal.SIGTERM)
        server = FakeProcessServer(base_dir, log_dir=tmp_path, startup_timeout=30).start()
        assert signal.getsignal(signal.SIGTERM) is not mine  # installed while a server runs
        pid = server.pid
        os.kill(os.getpid(), signal.SIGTERM)
        assert wait_until(lambda: received == [signal.SIGTERM], timeout=30)  # chained to mine
        assert not group_members(pid)  # ... after the server was stopped
        assert signal.getsignal(signal.SIGTERM) is mine  # and mine is back
        server.stop()  # still safe
        second = FakeProcessServer(base_dir, log_dir=tmp_path / "2", startup_timeout=30).start()
        second.stop()
        assert signal.getsignal(signal.SIGTERM) is mine  # a plain start/stop restores it too
    finally:
        signal.signal(signal.SIGTERM, previous)
