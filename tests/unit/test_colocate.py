"""Colocation on one device against the fake vLLM's sleep endpoints: sleep, train (a stub that
writes a new adapter version), wake, publish, and which adapter version answers afterwards;
the server's sleep/device/parallel flags; device plans."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_vllm_server import FakeVLLM, RecordedRequest
from serving_helpers import make_adapter

from dspylite.errors import ColocationError, ConfigError, ServingError
from serving import VLLMServer
from serving.colocate import Colocation, asleep, effective_mode, server_args
from serving.connection import VLLMConnection
from serving.devices import parse_devices, plan_devices, training_env

FAKE_SCRIPT = Path(__file__).resolve().parents[1] / "fake_vllm_server.py"


@pytest.fixture
def sleepy(base_dir: Path) -> Iterator[FakeVLLM]:
    with FakeVLLM(str(base_dir), served_model_name="tiny", sleep_mode=True) as server:
        yield server


def _train_stub(out: Path, base_dir: Path, connection: VLLMConnection) -> Path:
    """Stands in for an SFT/GRPO phase: checks the server is asleep, writes the next version."""
    assert connection.is_sleeping(), "training ran while vLLM still held the GPU"
    return make_adapter(out, base_model=str(base_dir))


def test_sleep_train_wake_then_the_new_version_answers(
    sleepy: FakeVLLM, base_dir: Path, tmp_path: Path
) -> None:
    connection = VLLMConnection([sleepy.api_base])
    v1 = make_adapter(tmp_path / "adapters" / "run-1", base_model=str(base_dir))
    connection.load_adapter("run-1", v1)
    said: list[str] = []
    colocation = Colocation(connection, "sleep", say=said.append)

    assert not connection.is_sleeping()
    with colocation.training_phase("SFT step 2"):
        v2 = _train_stub(tmp_path / "adapters" / "run-2", base_dir, connection)
    assert not connection.is_sleeping()
    connection.load_adapter("run-2", v2)

    # level 1 keeps LoRA state: run-1 is still served, and was not reloaded
    assert RecordedRequest("POST", "/sleep?level=1", {}) in sleepy.requests
    assert [r for r in sleepy.admin_requests() if r.path == "/v1/load_lora_adapter"] == [
        RecordedRequest(
            "POST", "/v1/load_lora_adapter", {"lora_name": "run-1", "lora_path": str(v1.resolve())}
        ),
        RecordedRequest(
            "POST", "/v1/load_lora_adapter", {"lora_name": "run-2", "lora_path": str(v2.resolve())}
        ),
    ]
    assert colocation.events[0]["phase"] == "SFT step 2" and colocation.events[0]["reloaded"] == []
    assert said[0].startswith("vLLM asleep (level 1) for SFT step 2") and said[1].startswith("vLLM awake")

    assert connection.lm("run-2", cache=False)("q") == ["run-2 echoes: q"]
    assert connection.lm("run-1", cache=False)("q") == ["run-1 echoes: q"]
    assert sleepy.completions == [("run-2", str(v2.resolve())), ("run-1", str(v1.resolve()))]


def test_adapters_dropped_by_the_sleep_are_reloaded(base_dir: Path, tmp_path: Path) -> None:
    with FakeVLLM(str(base_dir), sleep_mode=True, drop_adapters_on_sleep=True) as fake:
        connection = VLLMConnection([fake.api_base])
        v1 = make_adapter(tmp_path / "run-1", base_model=str(base_dir))
        connection.load_adapter("run-1", v1)
        with asleep(connection, "GRPO step 1") as colocation:
            assert fake.adapters == {}  # the server forgot it
        assert colocation.events[0]["reloaded"] == ["run-1"]
        assert fake.adapters == {"run-1": str(v1.resolve())}
        assert connection.lm("run-1", cache=False)("q") == ["run-1 echoes: q"]
        assert fake.completions == [("run-1", str(v1.resolve()))]


def test_a_request_sent_while_asleep_is_served_after_wake_up(sleepy: FakeVLLM) -> None:
    connection = VLLMConnection([sleepy.api_base])
    answers: list[list[str]] = []
    with asleep(connection):
        worker = threading.Thread(target=lambda: answers.append(connection.lm(cache=False)("q")))
        worker.start()
        time.sleep(0.3)
        assert answers == [] and sleepy.completions == []
    worker.join(timeout=10)
    assert answers == [["tiny echoes: q"]]


def test_failed_training_still_wakes_the_server(sleepy: FakeVLLM) -> None:
    connection = VLLMConnection([sleepy.api_base])
    with pytest.raises(RuntimeError, match="out of memory"):
        with asleep(connection):
            raise RuntimeError("CUDA out of memory")
    assert not connection.is_sleeping()


def test_sleep_without_dev_endpoints_says_how_to_enable_them(base_dir: Path) -> None:
    with FakeVLLM(str(base_dir)) as plain:
        connection = VLLMConnection([plain.api_base])
        with pytest.raises(ServingError, match="--enable-sleep-mode and VLLM_SERVER_DEV_MODE=1"):
            connection.sleep()


def test_other_modes_do_nothing_around_training(sleepy: FakeVLLM) -> None:
    connection = VLLMConnection([sleepy.api_base])
    for mode in ("split", "off"):
        with Colocation(connection, mode).training_phase():
            assert not connection.is_sleeping()
    assert not any(r.path.startswith(("/sleep", "/wake_up")) for r in sleepy.requests)
    with pytest.raises(ColocationError, match="level 2"):
        Colocation(connection, "sleep", level=2)


def test_effective_mode_and_server_args() -> None:
    assert effective_mode("sleep", flavor="cpu") == "off"
    assert effective_mode("split", flavor="gpu", shared=False) == "off"
    assert effective_mode("Sleep", flavor="gpu") == "sleep"
    with pytest.raises(ConfigError, match="server.colocate='nap'"):
        effective_mode("nap", flavor="gpu")
    assert server_args("sleep") == {"enable_sleep_mode": True}
    assert server_args("off") == {}
    with pytest.raises(ColocationError, match="memory split"):
        server_args("split")


# -- the server process's flags and environment --------------------------------------------------


class FakeProcessServer(VLLMServer):
    entrypoint_argv = (str(FAKE_SCRIPT),)


def test_server_command_and_env_for_gpu_settings(base_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("serving.server.vllm_flavor", lambda: "gpu")
    server = VLLMServer(
        base_dir,
        port=8000,
        enable_sleep_mode=True,
        devices="2,3",
        tensor_parallel_size=2,
        gpu_memory_utilization=0.456,
    )
    server.validate()
    cmd = " ".join(server.command())
    assert "--enable-sleep-mode --tensor-parallel-size 2 --gpu-memory-utilization 0.46" in cmd
    assert "--data-parallel-size" not in cmd
    env = server.child_env()
    assert env["VLLM_SERVER_DEV_MODE"] == "1" and env["CUDA_VISIBLE_DEVICES"] == "2,3"

    plain = VLLMServer(base_dir, port=8000)
    assert "--enable-sleep-mode" not in plain.command() and "--gpu-memory-utilization" not in plain.command()
    assert "VLLM_SERVER_DEV_MODE" not in plain.child_env() or plain.child_env()["VLLM_SERVER_DEV_MODE"] != "1"

    with pytest.raises(ConfigError, match=r"lists 2 GPU\(s\).*2 x 2 = 4"):
        VLLMServer(base_dir, devices=[0, 1], tensor_parallel_size=2, data_parallel_size=2).validate()
    with pytest.raises(ServingError, match="gpu_memory_utilization=1.5"):
        VLLMServer(base_dir, gpu_memory_utilization=1.5).validate()


def test_sleep_mode_is_refused_on_the_cpu_build(base_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("serving.server.vllm_flavor", lambda: "cpu")
    with pytest.raises(ServingError, match="CPU build, which has no sleep mode"):
        VLLMServer(base_dir, enable_sleep_mode=True).validate()


def test_server_process_with_sleep_mode(
    base_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("serving.server.vllm_flavor", lambda: "gpu")
    adapter = make_adapter(tmp_path / "a", base_model=str(base_dir))
    server = FakeProcessServer(
        base_dir, log_dir=tmp_path / "run", enable_sleep_mode=True, devices="1", startup_timeout=30
    )
    with server:
        server.load_adapter("v-1", adapter)
        with asleep(server) as colocation:
            assert server.is_sleeping()
        assert not server.is_sleeping() and colocation.events[0]["reloaded"] == []
        assert server.lm("v-1", cache=False)("q") == ["v-1 echoes: q"]
        log = server.log_path.read_text()
        assert "env VLLM_SERVER_DEV_MODE=1" in log and "env CUDA_VISIBLE_DEVICES=1" in log
        assert re.search(r"--enable-sleep-mode", log)


# -- device plans --------------------------------------------------------------------------------


def test_device_plans() -> None:
    assert parse_devices("0, 2") == (0, 2) and parse_devices(None) is None and parse_devices("all") is None
    assert parse_devices([1]) == (1,) and parse_devices(3) == (3,)
    with pytest.raises(ConfigError, match="train.devices='gpu0'"):
        parse_devices("gpu0", field="train.devices")
    with pytest.raises(ConfigError, match="distinct"):
        parse_devices("1,1")
    assert not plan_devices("0", "1").shared
    assert plan_devices("0,1", "1", tensor_parallel_size=2).shared and plan_devices(None, "1").shared
    assert plan_devices("0,1,2,3", "4", tensor_parallel_size=2, data_parallel_size=2).server == (0, 1, 2, 3)
    env = training_env("1", base={"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0,1"})
    assert env == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "1"}
    assert training_env(None, base={"CUDA_VISIBLE_DEVICES": "0"}) == {"CUDA_VISIBLE_DEVICES": "0"}
