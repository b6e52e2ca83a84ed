"""Several vLLM servers as one backend (issue 27), against fake servers (tests/fake_vllm_server.py):
publishing loads and checks a version on every server, a server that cannot serve it leaves the
rotation, requests fail over from an unreachable server, and every completion names its server and
adapter version."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from fake_vllm_server import FakeVLLM
from serving_helpers import make_adapter

import dspylite as dspy
from dspylite.errors import AdapterRegistryError, LMConnectionError, ServingError
from dspylite.lm import LM
from dspylite.rotation import Rotation
from dspylite.trace import TraceRecord, capture_traces
from serving import connect
from serving.backend import Backend


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "tiny"
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path.resolve()


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
