"""serving.backend.Backend: the one object weight optimizers train, publish and serve through.

Against the fake vLLM (tests/fake_vllm_server.py); no model, no training.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_vllm_server import FakeVLLM
from serving_helpers import make_adapter

import dspylite as dspy
from dspylite.datasets.programs import FactQA
from dspylite.errors import ConfigError
from serving import connect
from serving.backend import Backend
from serving.colocate import Colocation
from serving.registry import AdapterRegistry
from serving.server import VLLMServer


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "tiny"
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"dtype": "float32"}))
    return path.resolve()


@pytest.fixture
def fake(base_dir: Path):
    with FakeVLLM(str(base_dir), served_model_name="tiny", sleep_mode=True) as server:
        yield server


def test_the_server_dtype_setting_becomes_the_backends_serving_dtype_once(base_dir: Path, fake) -> None:
    # server.dtype (YAML) -> VLLMServer(dtype=...) -> VLLMServer.dtype (normalized there) -> Backend
    assert Backend(VLLMServer(base_dir, dtype="bf16")).serving_dtype == "bfloat16"
    assert Backend(VLLMServer(base_dir, extra_args=["--dtype", "half"])).serving_dtype == "float16"
    # A server started elsewhere does not say what it samples in: unknown unless stated.
    assert Backend(connect(fake.api_base)).serving_dtype is None
    assert Backend(connect(fake.api_base), serving_dtype="fp16").serving_dtype == "float16"
    with pytest.raises(ConfigError, match="serving_dtype"):
        Backend(connect(fake.api_base), serving_dtype="int3")


def test_publish_names_registers_and_loads_each_version_by_path(tmp_path: Path, base_dir: Path, fake) -> None:
    backend = Backend.connect(fake.api_base, run_dir=tmp_path / "run")
    assert backend.model_dir == str(base_dir)  # what the server runs, asked from /v1/models
    first = backend.new_version_name("sft-ab12")
    path = make_adapter(backend.run.adapters_dir / first, base_model=str(base_dir))
    entry = backend.publish(first, path, metadata={"trainer": "test"})
    assert first == "sft-ab12-1" and entry.base_model == str(base_dir)
    assert fake.adapters[first] == str(path.resolve())
    assert AdapterRegistry(tmp_path / "run" / "adapters").get(first).metadata["trainer"] == "test"
    assert backend.new_version_name("sft-ab12") == "sft-ab12-2"  # never the same name twice


def test_a_view_for_another_run_dir_shares_server_registry_colocation_and_lm(tmp_path: Path, fake) -> None:
    server = connect(fake.api_base)
    lm = server.lm()
    colocation = Colocation(server, "off")
    backend = Backend(server, run_dir=tmp_path / "run", colocation=colocation, base_lm=lm)
    stage = backend.for_run(tmp_path / "run" / "work" / "w-1")
    assert stage.server is server and stage.colocation is colocation and stage.base_lm is lm
    assert stage.registry is backend.registry and stage.run_dir == tmp_path / "run" / "work" / "w-1"
    assert not stage.run_dir.exists()  # created when an optimizer first writes there
    assert backend.with_run_dir("grpo") is backend
    loose = Backend(server)
    with pytest.raises(ConfigError, match="run_dir"):
        loose.run  # noqa: B018 - the property raises
    fresh = loose.with_run_dir("grpo")
    assert fresh.run_dir.parent == Path("runs") and fresh.run_dir.name.startswith("grpo-")


def test_backend_lm_carries_the_backend_through_copies_but_never_into_saved_state(fake) -> None:
    backend = Backend.connect(fake.api_base)
    lm = backend.lm(temperature=0.3)
    assert lm.backend is backend and lm.model == "tiny" and lm.temperature == 0.3
    assert lm.copy(model="sft-1").backend is backend
    assert "backend" not in json.dumps(lm.dump_state())
    assert dspy.LM("tiny", api_base=fake.api_base).backend is None
    # The LM a backend binds programs through points back at it too.
    base = dspy.LM("tiny", api_base=fake.api_base)
    assert Backend(connect(fake.api_base), base_lm=base).base_lm.backend is not None


def test_bind_and_serve_a_saved_program_on_a_fresh_server(tmp_path: Path, base_dir: Path, fake) -> None:
    backend = Backend.connect(fake.api_base, run_dir=tmp_path / "run")
    name = backend.new_version_name("sft-cd34")
    backend.publish(name, make_adapter(backend.run.adapters_dir / name, base_model=str(base_dir)))
    with dspy.context(lm=backend.lm()):  # bound through the configured LM (base_lm is None here)
        program = backend.bind(FactQA(), name, predictors=["answer"])
    assert program.answer.lm.model == name and program.extract.lm is None
    program.save(tmp_path / "program.json")
    with FakeVLLM(str(base_dir), served_model_name="tiny") as restarted:
        again = Backend.connect(restarted.api_base, run_dir=tmp_path / "run")
        loaded = FactQA()
        loaded.load(tmp_path / "program.json")
        assert again.serve(loaded) == [name]  # found in the registry, loaded by path
        assert name in restarted.adapters and again.serve(loaded) == []


def test_training_phase_is_the_colocation_around_training(tmp_path: Path, fake) -> None:
    server = connect(fake.api_base)
    backend = Backend(server, run_dir=tmp_path / "run", colocation=Colocation(server, "sleep"))
    with backend.training_phase("SFT x"):
        assert server.is_sleeping()
    assert not server.is_sleeping() and backend.colocation.events[0]["phase"] == "SFT x"
    with Backend(server).training_phase():  # default: nothing arranged
        assert not server.is_sleeping()
