"""Several vLLM servers as one backend (issue 27), against fake servers (tests/fake_vllm_server.py):
publishing loads and checks a version on every server, a server that cannot serve it leaves the
rotation, requests fail over from an unreachable server, and every completion names its server and
adapter version."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
from fake_vllm_server import FakeVLLM
from serving_helpers import make_adapter

import dspylite as dspy
from dspylite.errors import AdapterRegistryError, ConfigError, LMConnectionError, ServingError
from dspylite.lm import LM
from dspylite.rotation import Rotation
from dspylite.trace import TraceRecord, capture_traces
from serving import connect
from serving.backend import Backend


def _completion_requests(server: FakeVLLM) -> int:
    return len(server.completion_requests)


def _refuse_loads(server: FakeVLLM) -> None:
    server._load_adapter = lambda body: (500, {"error": {"message": "engine is out of LoRA slots"}})  # type: ignore[method-assign]


# ---- publishing to every server ---------------------------------------------------------------------


def test_publish_loads_and_checks_the_version_on_every_server(base_dir: Path, tmp_path: Path) -> None:
    with FakeVLLM(str(base_dir)) as a, FakeVLLM(str(base_dir)) as b:
        backend = Backend(connect([a.api_base, b.api_base]), run_dir=tmp_path / "run")
        backend.publish("v-1", make_adapter(tmp_path / "v1", base_model=str(base_dir)))
        assert "v-1" in a.adapters and "v-1" in b.adapters
        for fake in (a, b):  # each one was asked for its model list after the load
            paths = [r.path for r in fake.requests]
            assert paths.index("/v1/models", paths.index("/v1/load_lora_adapter")) > 0
        assert backend.server.active_bases == [a.api_base, b.api_base]


def test_a_server_that_cannot_load_a_version_leaves_the_rotation(
    base_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeVLLM(str(base_dir)) as a, FakeVLLM(str(base_dir)) as b:
        server = connect([a.api_base, b.api_base])
        lm = server.lm("v-1", cache=False)  # made before the failure: it must stop using b too
        _refuse_loads(b)
        with caplog.at_level(logging.WARNING, logger="dspylite.rotation"):
            server.load_adapter("v-1", make_adapter(tmp_path / "v1", base_model=str(base_dir)))
        assert server.active_bases == [a.api_base]
        assert any(
            b.api_base in r.getMessage() and "out of LoRA slots" in r.getMessage() for r in caplog.records
        )
        before = _completion_requests(b)
        copy = lm.copy(temperature=0.5)
        for client in (lm, copy, server.lm("v-1", cache=False)):
            for _ in range(3):
                assert client("hi") == ["v-1 echoes: hi"]
        assert _completion_requests(b) == before
        assert _completion_requests(a) == 9
        # The next version is loaded on the servers in rotation only.
        server.load_adapter("v-2", make_adapter(tmp_path / "v2", base_model=str(base_dir)))
        assert "v-2" in a.adapters and "v-2" not in b.adapters


def test_a_server_that_does_not_list_the_loaded_version_leaves_the_rotation(
    base_dir: Path, tmp_path: Path
) -> None:
    with FakeVLLM(str(base_dir)) as a, FakeVLLM(str(base_dir)) as b:
        server = connect([a.api_base, b.api_base])
        listing = b.models_body
        b.models_body = lambda: {  # type: ignore[method-assign]
            "object": "list",
            "data": [c for c in listing()["data"] if c["id"] != "v-1"],
        }
        server.load_adapter("v-1", make_adapter(tmp_path / "v1", base_model=str(base_dir)))
        assert server.active_bases == [a.api_base]
        assert "does not list" in server.rotation.out[b.api_base]


def test_an_unreachable_server_leaves_the_rotation_when_a_version_is_published(
    base_dir: Path, tmp_path: Path
) -> None:
    with FakeVLLM(str(base_dir)) as a:
        b = FakeVLLM(str(base_dir)).start()
        server = connect([a.api_base, b.api_base])
        b.stop()
        server.load_adapter("v-1", make_adapter(tmp_path / "v1", base_model=str(base_dir)))
        assert server.active_bases == [a.api_base] and "v-1" in a.adapters
        server.unload_adapter("v-1")  # only the servers in rotation are asked
        assert "v-1" not in a.adapters


def test_no_server_left_names_the_adapter_and_every_server(base_dir: Path, tmp_path: Path) -> None:
    with FakeVLLM(str(base_dir)) as a, FakeVLLM(str(base_dir)) as b:
        server = connect([a.api_base, b.api_base])
        _refuse_loads(a)
        _refuse_loads(b)
        with pytest.raises(ServingError, match="adapter 'v-1'.*could not be loaded on any server") as info:
            server.load_adapter("v-1", make_adapter(tmp_path / "v1", base_model=str(base_dir)))
        assert a.api_base in str(info.value) and b.api_base in str(info.value)
        assert server.active_bases == [a.api_base, b.api_base]  # nothing to fall back on: unchanged
        assert "v-1" not in server.loaded_adapters


def test_the_last_server_failing_names_those_already_out_of_rotation(base_dir: Path, tmp_path: Path) -> None:
    with FakeVLLM(str(base_dir)) as a, FakeVLLM(str(base_dir)) as b:
        server = connect([a.api_base, b.api_base])
        _refuse_loads(b)
        server.load_adapter("v-1", make_adapter(tmp_path / "v1", base_model=str(base_dir)))
        _refuse_loads(a)
        with pytest.raises(ServingError, match="adapter 'v-2'") as info:
            server.load_adapter("v-2", make_adapter(tmp_path / "v2", base_model=str(base_dir)))
        assert f"{a.api_base}: cannot load" in str(info.value)
        assert f"{b.api_base}: out of rotation (could not serve adapter 'v-1'" in str(info.value)


def test_a_bad_adapter_is_rolled_back_everywhere_and_no_server_leaves(base_dir: Path, tmp_path: Path) -> None:
    with FakeVLLM(str(base_dir)) as a, FakeVLLM(str(base_dir)) as b:
        b.adapters["v-1"] = "/elsewhere"  # the name is taken there: the adapter's fault, not the server's
        server = connect([a.api_base, b.api_base])
        with pytest.raises(AdapterRegistryError, match="already loaded"):
            server.load_adapter("v-1", make_adapter(tmp_path / "v1", base_model=str(base_dir)))
        assert "v-1" not in a.adapters and server.active_bases == [a.api_base, b.api_base]


# ---- requests ---------------------------------------------------------------------------------------


def test_requests_fail_over_from_an_unreachable_server_without_spending_retries(base_dir: Path) -> None:
    with FakeVLLM(str(base_dir)) as a:
        b = FakeVLLM(str(base_dir)).start()
        lm = LM(str(base_dir), api_base=[b.api_base, a.api_base], num_retries=0, cache=False)
        b.stop()
        outputs = [lm.generate([{"role": "user", "content": f"q{i}"}])[0] for i in range(4)]
        assert [c.served_by for c in outputs] == [a.api_base] * 4
        assert _completion_requests(a) == 4 and lm.usage["retries"] == 0 and not lm.breaker.is_open


def test_every_server_down_is_a_connection_error_naming_them(base_dir: Path) -> None:
    a, b = FakeVLLM(str(base_dir)).start(), FakeVLLM(str(base_dir)).start()
    lm = LM("m", api_base=[a.api_base, b.api_base], num_retries=0, cache=False)
    a.stop()
    b.stop()
    with pytest.raises(LMConnectionError, match="could not reach") as info:
        lm("hi")
    assert a.api_base in str(info.value) and b.api_base in str(info.value)


def test_an_lm_whose_servers_are_all_out_of_rotation_says_why() -> None:
    lm = LM("m", api_base=["http://127.0.0.1:9/v1"], cache=False)
    lm.rotation = Rotation()
    lm.rotation.take_out("http://127.0.0.1:9/v1", "could not serve adapter 'v-3'")
    with pytest.raises(LMConnectionError, match="out of rotation.*could not serve adapter 'v-3'"):
        lm("hi")


def test_a_copy_to_other_servers_drops_the_rotation(base_dir: Path) -> None:
    lm = LM("m", api_base=["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"])
    lm.rotation = Rotation()
    assert lm.copy(model="v-1").rotation is lm.rotation
    assert lm.copy(api_base="http://127.0.0.1:11/v1").rotation is None


# ---- what each completion records ----------------------------------------------------------------------


class QA(dspy.Signature):
    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


def test_traces_name_the_server_and_the_version_that_answered(base_dir: Path, tmp_path: Path) -> None:
    with FakeVLLM(str(base_dir)) as a, FakeVLLM(str(base_dir)) as b:
        for fake in (a, b):
            fake.reply_fn = lambda body, fake=fake: (
                f"[[ ## answer ## ]]\n{fake.port}\n\n[[ ## completed ## ]]"
            )
        server = connect([a.api_base, b.api_base])
        server.load_adapter("v-1", make_adapter(tmp_path / "v1", base_model=str(base_dir)))
        program = dspy.Predict(QA)
        with dspy.context(lm=server.lm("v-1", cache=False)), capture_traces() as traces:
            answers = [program(question=f"q{i}").answer for i in range(4)]
        by_port = {str(fake.port): fake.api_base for fake in (a, b)}
        assert [t.served_by for t in traces] == [by_port[answer] for answer in answers]
        assert {t.served_by for t in traces} == {a.api_base, b.api_base}
        assert {t.model for t in traces} == {"v-1"}


def test_trace_records_without_a_server_load_from_older_json() -> None:
    data: dict[str, Any] = {
        "predictor_name": "p",
        "signature": "q -> a",
        "inputs": {"q": 1},
        "messages": [],
        "completion": "x",
        "model": "v-1",
        "adapter": "chat",
    }
    old = TraceRecord.from_dict(data)
    assert old.served_by is None
    again = TraceRecord.from_dict({**old.to_dict(), "served_by": "http://h:1/v1"})
    assert again.served_by == "http://h:1/v1" and again.to_dict()["served_by"] == "http://h:1/v1"


# ---- the server schema: several servers, replicas, data parallelism -------------------------------------


def test_api_base_takes_one_url_a_yaml_list_or_a_comma_separated_override(tmp_path: Path) -> None:
    from dspylite.config_io import load_config
    from serving.config import ServerConfig

    a, b = "http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"
    assert load_config(ServerConfig, None, [f"api_base={a}"]).api_bases == [a]
    assert load_config(ServerConfig, None, [f"api_base={a},{b}"]).api_base == [a, b]
    path = tmp_path / "s.yaml"
    path.write_text(f"api_base:\n  - {a}\n  - {b}\n")
    assert load_config(ServerConfig, path).api_bases == [a, b]
    assert ServerConfig().api_bases == []
    for bad, message in (
        ("api_base=[]", "server.api_base=.*empty list"),
        (f"api_base={a},", "empty entry"),
        (f"api_base={a},{a}", "lists a server twice"),
        ("api_base=10.0.0.1:8000,x", "must start with http"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(ServerConfig, None, [bad])


def test_replicas_are_checked_with_the_key_named() -> None:
    from serving.config import ServerConfig

    with pytest.raises(ConfigError, match=r"server\.replicas must be >= 1"):
        ServerConfig(replicas=0)
    with pytest.raises(ConfigError, match=r"server\.replicas=2 starts servers here, but server\.api_base"):
        ServerConfig(replicas=2, api_base="http://h:1/v1")
    assert ServerConfig(replicas=3).replicas == 3


def test_help_lists_replicas_and_several_api_bases() -> None:
    from typer.testing import CliRunner

    from dspylite.cli import app

    result = CliRunner().invoke(app, ["grpo", "--help"], env={"COLUMNS": "400"}, terminal_width=400)
    assert result.exit_code == 0, result.output
    assert " server.replicas = 1: vLLM servers a job starts here" in result.output
    assert "comma-separated" in result.output and "server.api_base = ''" in result.output


@pytest.mark.parametrize(
    ("settings", "where"),
    [
        ({"data_parallel_size": 2}, "server.data_parallel_size=2"),
        ({"extra_args": ["--data-parallel-size", "4"]}, "server.extra_args --data-parallel-size=4"),
        ({"extra_args": ["-dp=2"]}, "server.extra_args -dp=2"),
    ],
)
def test_vllm_data_parallelism_is_refused_naming_replicas(settings: dict[str, Any], where: str) -> None:
    from serving.config import ServerConfig

    with pytest.raises(ConfigError, match=re.escape(where) + r".*runtime-loaded LoRA.*use server\.replicas="):
        ServerConfig(**settings)


def test_a_job_config_and_a_server_object_with_data_parallelism_are_refused(base_dir: Path) -> None:
    from dspylite.config_io import load_config
    from dspylite.jobs.grpo_job import GRPOJobConfig
    from serving.server import VLLMServer

    with pytest.raises(ConfigError, match=r"server\.data_parallel_size=2.*server\.replicas=2"):
        load_config(GRPOJobConfig, None, ["server.data_parallel_size=2"])
    with pytest.raises(ConfigError, match=r"server\.replicas=2"):
        VLLMServer(base_dir, data_parallel_size=2).validate()
    VLLMServer(base_dir, data_parallel_size=2, enable_lora=False).validate()  # no LoRA: vLLM's own DP


def test_replicas_get_their_own_ports_gpus_and_logs(base_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from serving.config import ServerConfig
    from serving.launch import build_server
    from serving.replicas import LocalReplicas

    monkeypatch.setattr("serving.placement.placement", lambda config, trains=True: (_NoPlan(), "off"))
    config = ServerConfig(replicas=2, tensor_parallel_size=2, devices="4,5,6,7", port=9100)
    group = build_server(str(base_dir), config, tmp_path / "run", trains=False)
    assert isinstance(group, LocalReplicas) and len(group.servers) == 2
    first, second = group.servers
    assert (first.port, second.port) == (9100, 9101)
    assert (first.devices, second.devices) == ((4, 5), (6, 7))
    assert first.log_path == tmp_path / "run" / "replica-0" / "vllm.log"
    assert "--tensor-parallel-size" in first.command() and first.child_env()["CUDA_VISIBLE_DEVICES"] == "4,5"
    free = build_server(str(base_dir), ServerConfig(replicas=3), tmp_path / "run2", trains=False)
    ports = [server.port for server in free.servers]
    assert len(set(ports)) == 3 and all(ports)


def test_cpu_replicas_get_their_own_cores(base_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from serving.config import ServerConfig
    from serving.launch import build_server, replica_cpu_cores

    monkeypatch.setattr("serving.placement.placement", lambda config, trains=True: (_NoPlan(), "off"))
    monkeypatch.setattr("serving.server.usable_cores", lambda: [0, 1, 2, 3, 4])
    monkeypatch.setattr("serving.server.vllm_flavor", lambda: "cpu")
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    assert replica_cpu_cores(2) == [[0, 1], [2, 3]]
    assert replica_cpu_cores(2, tensor_parallel_size=3) == [None, None]  # 6 ranks, 5 cores: vLLM binds
    group = build_server(str(base_dir), ServerConfig(replicas=2), tmp_path / "run", trains=False)
    binds = [server.child_env()["VLLM_CPU_OMP_THREADS_BIND"] for server in group.servers]
    assert binds == ["0,1", "2,3"]
    monkeypatch.setattr("serving.server.vllm_flavor", lambda: "gpu")
    group = build_server(str(base_dir), ServerConfig(replicas=2), tmp_path / "run2", trains=False)
    assert all(server.cpu_cores is None for server in group.servers)


class _NoPlan:
    train = None


def test_replicas_need_replicas_x_tp_devices() -> None:
    from serving.devices import plan_devices

    with pytest.raises(
        ConfigError, match=r"lists 2 GPU\(s\).*replicas x tensor_parallel_size.*2 x 2 x 1 = 4"
    ):
        plan_devices("0,1", None, tensor_parallel_size=2, replicas=2)
    assert plan_devices("0,1,2,3", None, tensor_parallel_size=2, replicas=2).server == (0, 1, 2, 3)


FAKE_SCRIPT = Path(__file__).resolve().parents[1] / "fake_vllm_server.py"


def test_a_job_starts_replicas_as_one_backend_and_stops_them_all(
    base_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving.config import ServerConfig
    from serving.server import VLLMServer

    monkeypatch.setattr(VLLMServer, "entrypoint_argv", (str(FAKE_SCRIPT),))  # the fake, as a process
    config = ServerConfig(replicas=2, served_model_name="tiny", colocate="off", startup_timeout=30)
    adapter = make_adapter(tmp_path / "v1", base_model=str(base_dir))
    with Backend.open(str(base_dir), config, tmp_path / "run", trains=False) as backend:
        servers = backend.server.servers
        assert len(set(backend.server.api_bases)) == 2 and all(s.is_running() for s in servers)
        assert all((tmp_path / "run" / f"replica-{i}" / "vllm.log").exists() for i in range(2))
        backend.publish("v-1", adapter)
        lm = backend.lm(model="v-1", cache=False)
        outputs = [lm.generate([{"role": "user", "content": f"q{i}"}])[0] for i in range(4)]
        assert {c.served_by for c in outputs} == set(backend.server.api_bases)
        assert {c.model for c in outputs} == {"v-1"}
    assert not any(s.is_running() for s in servers)


# ---- GRPO: bounded staleness ---------------------------------------------------------------------------


class VersionedLM:
    """A scripted policy: answers in ChatAdapter's format; which version answers is scripted per rollout
    (``answered_by``: rollout id -> model name), as a lagging server would."""

    def __init__(self, model: str, answered_by: dict[int, str]):
        self.model = model
        self.answered_by = answered_by

    def generate(self, messages, *, n=1, rollout_id=None, **kwargs):  # noqa: ANN001, ANN003, ANN201
        from dspylite.completion import Completion

        text = f"[[ ## answer ## ]]\n{'right' if rollout_id % 2 else 'wrong'}\n\n[[ ## completed ## ]]"
        model = self.answered_by.get(rollout_id, self.model)
        return [
            Completion(
                text=text, model=model, token_ids=[5, 2], prompt_token_ids=[3, 4], served_by="http://s:1/v1"
            )
            for _ in range(n)
        ]

    def copy(self, **overrides):  # noqa: ANN003, ANN201
        return VersionedLM(overrides.get("model", self.model), self.answered_by)

    def dump_state(self):  # noqa: ANN201
        return {"model": self.model}


def _metric(example, prediction, trace=None):  # noqa: ANN001, ANN202
    return float(prediction.answer == "right")


@pytest.mark.parametrize(("max_staleness", "dropped"), [(0, {1, 2}), (1, {2}), (2, set())])
def test_rollouts_from_versions_older_than_the_staleness_bound_are_dropped_and_counted(
    max_staleness: int, dropped: set[int]
) -> None:
    from rl.rollouts import collect_rollouts
    from rl.trainer import rollout_program

    history = ["grpo-s-1", "grpo-s-2", "grpo-s-3"]  # oldest first; grpo-s-3 is current
    lm = VersionedLM("grpo-s-3", answered_by={1: "grpo-s-2", 2: "grpo-s-1"})
    program = rollout_program(dspy.Predict("question -> answer"), "grpo-s-3", lm)
    examples = [dspy.Example(question=f"q{i}").with_inputs("question") for i in range(2)]
    batch = collect_rollouts(
        program,
        examples,
        _metric,
        num_rollouts=4,
        temperature=1.0,
        num_threads=2,
        versions=history[-(max_staleness + 1) :],
    )
    stale = [r for r in batch.excluded if r.error_kind == "stale"]
    assert {r.rollout_id for r in stale} == dropped
    assert len(stale) == 2 * len(dropped)  # both examples
    assert batch.stats()["stale_rollouts"] == 2 * len(dropped)
    assert all(t.model in history[-(max_staleness + 1) :] for r in batch.rollouts for t in r.traces)
    assert all("grpo-s-" in r.error and "http://s:1/v1" in r.error for r in stale)
    assert len(batch.rollouts) == 8 - 2 * len(dropped)


def test_staleness_checks_only_the_trained_predictors() -> None:
    from rl.rollouts import stale_call

    def trace(name: str, model: str) -> TraceRecord:
        return TraceRecord(name, "q -> a", {}, [], "x", model, "chat")

    traces = [trace("draft", "base"), trace("answer", "v-2")]
    assert stale_call(traces, ["v-2"], trained=["answer"]) is None
    assert "draft was answered by 'base'" in stale_call(traces, ["v-2"])


def test_grpo_config_refuses_a_negative_staleness() -> None:
    from rl.config import GRPOConfig

    assert GRPOConfig().max_staleness == 0
    with pytest.raises(ValueError, match="max_staleness must be >= 0"):
        GRPOConfig(max_staleness=-1)


def test_dspylite_serve_starts_one_server_and_says_how_to_run_several(base_dir: Path) -> None:
    from serving.config import ServerConfig
    from serving.serve import ServeConfig, prepare_server

    with pytest.raises(
        ConfigError, match=r"server\.replicas=2: `dspylite serve` starts one server.*api_base"
    ):
        prepare_server(ServeConfig(model=str(base_dir), server=ServerConfig(replicas=2)))
