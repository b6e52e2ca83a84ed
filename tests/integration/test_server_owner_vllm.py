"""Issue 14 on a real vLLM (tiny model), items 1 and 5: the API key is in no process's argv while
the server runs (the API process and vLLM's EngineCore), a request with the key works and one
without gets 401; then the owner is SIGKILLed and no process of the server's group survives it.
(The SIGTERM case runs against the fake server in tests/unit/test_server_owner.py.)"""

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

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-dspylite-integration-5f0c1e2d"

OWNER = textwrap.dedent(
    """
    import os, sys, time
    from serving import VLLMServer

    server = VLLMServer(sys.argv[1], served_model_name="tiny", api_key=os.environ["OWNER_TEST_KEY"], log_dir=sys.argv[2],
                        max_lora_rank=16, startup_timeout=600)
    server.start()
    print(server.pid, server.api_base, flush=True)
    time.sleep(3600)
    """
)


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_key_off_argv_and_server_group_dies_with_a_killed_owner(tiny_model_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    # The test hands the key to the owner the way a user should: not on a command line.
    env = {
        **os.environ,
        "OWNER_TEST_KEY": KEY,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    owner = subprocess.Popen(
        [sys.executable, str(script), str(tiny_model_dir), str(tmp_path / "log")],
        stdout=subprocess.PIPE,
        env=env,
    )
    server_pid = None
    try:
        line = owner.stdout.readline().decode().split()
        assert len(line) == 2, f"the owner did not start vLLM; see {tmp_path / 'log' / 'vllm.log'}"
        server_pid, api_base = int(line[0]), line[1]
        members = _group_members(server_pid)
        assert server_pid in members and len(members) >= 2, members  # API server + EngineCore
        for pid in [owner.pid, *members]:
            assert KEY.encode() not in _cmdline(pid), f"the key is in the argv of pid {pid}"
        assert KEY not in (tmp_path / "log" / "vllm.log").read_text()

        answer = LM("tiny", api_base=api_base, api_key=KEY, cache=False, max_tokens=4).generate(
            [{"role": "user", "content": "hi"}]
        )
        assert answer and isinstance(answer[0].text, str)
        with pytest.raises(LMRequestError, match="HTTP 401"):
            LM("tiny", api_base=api_base, api_key="EMPTY", cache=False, num_retries=0, max_tokens=4)("hi")

        owner.kill()
        owner.wait(timeout=10)
        started = time.monotonic()
        while _group_members(server_pid) and time.monotonic() - started < 20:
            time.sleep(0.2)
        left = _group_members(server_pid)
        assert not left, f"still running {time.monotonic() - started:.1f}s after the owner died: {left}"
        print(f"server group gone {time.monotonic() - started:.1f}s after SIGKILL of the owner")
    finally:
        owner.kill()
        if server_pid is not None:
            try:
                os.killpg(server_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
