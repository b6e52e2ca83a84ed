"""The adapter registry and the adapter-directory checks (no vLLM, no torch)."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
from serving_helpers import make_adapter

from dspylite.errors import AdapterRegistryError
from serving.adapter_files import check_base_model, check_rank, read_adapter, same_model
from serving.registry import AdapterRegistry

# -- adapter directory validation ---------------------------------------------------------------


def test_read_adapter_reports_rank_base_and_tensors(tmp_path: Path) -> None:
    info = read_adapter(make_adapter(tmp_path / "a", rank=12, base_model="/models/tiny"))
    assert info.rank == 12
    assert info.base_model == "/models/tiny"
    assert info.num_tensors == 2
    assert info.target_modules == ["q_proj", "v_proj"]
    assert Path(info.path).is_absolute()


def test_rank_pattern_raises_the_effective_rank(tmp_path: Path) -> None:
    path = make_adapter(tmp_path / "a", rank=8, extra_config={"rank_pattern": {"q_proj": 32}})
    assert read_adapter(path).rank == 32


def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(AdapterRegistryError, match=r"adapter 'v1' at .*nowhere.*does not exist"):
        read_adapter(tmp_path / "nowhere", name="v1")


def test_missing_config_is_named(tmp_path: Path) -> None:
    path = make_adapter(tmp_path / "a")
    (path / "adapter_config.json").unlink()
    with pytest.raises(AdapterRegistryError, match="missing adapter_config.json"):
        read_adapter(path)


def test_config_that_is_not_json(tmp_path: Path) -> None:
    path = make_adapter(tmp_path / "a")
    (path / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterRegistryError, match="adapter_config.json is not readable JSON"):
        read_adapter(path)


@pytest.mark.parametrize("rank", [0, -4, "8", None, True])
def test_bad_rank_field(tmp_path: Path, rank: object) -> None:
    path = make_adapter(tmp_path / "a")
    config = json.loads((path / "adapter_config.json").read_text())
    config["r"] = rank
    (path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterRegistryError, match="field 'r' must be a positive integer"):
        read_adapter(path)


def test_non_lora_peft_type_is_refused(tmp_path: Path) -> None:
    path = make_adapter(tmp_path / "a", extra_config={"peft_type": "IA3"})
    with pytest.raises(AdapterRegistryError, match="only LORA is served"):
        read_adapter(path)


def test_missing_weights(tmp_path: Path) -> None:
    path = make_adapter(tmp_path / "a")
    (path / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterRegistryError, match="missing adapter_model.safetensors"):
        read_adapter(path)


def test_truncated_weights(tmp_path: Path) -> None:
    path = make_adapter(tmp_path / "a")
    weights = path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(AdapterRegistryError, match="is truncated"):
        read_adapter(path)


@pytest.mark.parametrize(
    "content", [b"", b"abc", b"\xff" * 64, b"\x10\x00\x00\x00\x00\x00\x00\x00{bad json here}"]
)
def test_garbage_weights(tmp_path: Path, content: bytes) -> None:
    path = make_adapter(tmp_path / "a")
    (path / "adapter_model.safetensors").write_bytes(content)
    with pytest.raises(AdapterRegistryError, match="adapter_model.safetensors"):
        read_adapter(path)


def test_rank_above_server_limit(tmp_path: Path) -> None:
    info = read_adapter(make_adapter(tmp_path / "a", rank=32))
    check_rank(info, 32)
    check_rank(info, None)
    with pytest.raises(AdapterRegistryError, match=r"rank 32, above the server's max_lora_rank=16"):
        check_rank(info, 16, name="big")


def test_base_model_mismatch(tmp_path: Path) -> None:
    base = tmp_path / "models" / "tiny"
    base.mkdir(parents=True)
    other = tmp_path / "models" / "other"
    other.mkdir()
    info = read_adapter(make_adapter(tmp_path / "a", base_model=str(base)))
    check_base_model(info, str(base))
    check_base_model(info, str(tmp_path / "models" / ".." / "models" / "tiny"))  # same dir, other spelling
    with pytest.raises(
        AdapterRegistryError, match=r"trained on base model .*tiny.* but the server runs .*other"
    ):
        check_base_model(info, str(other), name="v1")


def test_same_model_rules(tmp_path: Path) -> None:
    local = tmp_path / "Qwen" / "Qwen2.5-0.5B"
    local.mkdir(parents=True)
    assert same_model("Qwen/Qwen2.5-0.5B", str(local))
    assert same_model(str(local), "Qwen/Qwen2.5-0.5B")
    assert same_model("Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-0.5B/")
    assert not same_model("Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-1.5B")
    assert not same_model("meta-llama/Llama-3.2-1B", str(local))


# -- registry -----------------------------------------------------------------------------------


def test_register_get_list_latest(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "registry")
    a = reg.register("run-1", make_adapter(tmp_path / "a", rank=4), metrics={"dev": 0.5})
    b = reg.register("run-2", make_adapter(tmp_path / "b", rank=8), metadata={"step": 2})
    reg.register("other-1", make_adapter(tmp_path / "c"))
    assert reg.get("run-1") == a
    assert a.rank == 4 and a.metrics == {"dev": 0.5} and a.base_model == "/models/tiny"
    assert b.metadata == {"step": 2}
    assert [e.name for e in reg.list()] == ["run-1", "run-2", "other-1"]
    assert [e.name for e in reg.list("run")] == ["run-1", "run-2"]
    assert reg.latest("run").name == "run-2"
    assert reg.latest().name == "other-1"
    assert reg.latest("missing") is None
    assert "run-1" in reg and "nope" not in reg and len(reg) == 3


def test_index_survives_a_new_registry_object(tmp_path: Path) -> None:
    AdapterRegistry(tmp_path / "r").register("v-1", make_adapter(tmp_path / "a"), metrics={"loss": 1.25})
    again = AdapterRegistry(tmp_path / "r")
    entry = again.get("v-1")
    assert entry.metrics == {"loss": 1.25}
    assert entry.created_at.endswith("+00:00")
    data = json.loads((tmp_path / "r" / "registry.json").read_text())
    assert data["format_version"] == 1 and set(data["adapters"]) == {"v-1"}


def test_unregister_removes_only_the_entry(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "r")
    reg.register("v-1", make_adapter(tmp_path / "a"))
    reg.register("v-2", make_adapter(tmp_path / "b"))
    entry = reg.unregister("v-2")
    assert entry.name == "v-2" and (tmp_path / "b").is_dir()  # the directory is the caller's to delete
    assert [e.name for e in AdapterRegistry(tmp_path / "r").list()] == ["v-1"]
    with pytest.raises(AdapterRegistryError, match=r"no adapter named 'v-2'.*registered: v-1"):
        reg.unregister("v-2")


def test_names_are_immutable(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "r")
    reg.register("sft-1", make_adapter(tmp_path / "a"))
    with pytest.raises(AdapterRegistryError, match=r"'sft-1' is already registered.*such as 'sft-2'"):
        reg.register("sft-1", make_adapter(tmp_path / "b"))
    assert reg.get("sft-1").path == str((tmp_path / "a").resolve())


def test_next_version_name(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "r")
    assert reg.next_version_name("grpo") == "grpo-1"
    reg.register("grpo-1", make_adapter(tmp_path / "a"))
    reg.register("grpo-7", make_adapter(tmp_path / "b"))
    reg.register("grpo-x-3", make_adapter(tmp_path / "c"))  # another run whose name extends this one
    assert reg.next_version_name("grpo") == "grpo-8"
    assert reg.next_version_name("grpo-x") == "grpo-x-4"


def test_invalid_registration_writes_nothing(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "r")
    with pytest.raises(AdapterRegistryError, match="does not exist"):
        reg.register("v-1", tmp_path / "missing")
    with pytest.raises(AdapterRegistryError, match="invalid adapter name"):
        reg.register("bad name/../x", make_adapter(tmp_path / "a"))
    with pytest.raises(AdapterRegistryError, match="metrics of adapter 'v-1' must be JSON-serialisable"):
        reg.register("v-1", make_adapter(tmp_path / "a"), metrics={"x": object()})
    assert reg.list() == []
    assert not (tmp_path / "r" / "registry.json").exists()


def test_base_model_given_must_match_the_adapter(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "r")
    path = make_adapter(tmp_path / "a", base_model="org/model-a")
    with pytest.raises(AdapterRegistryError, match="trained on base model 'org/model-a'"):
        reg.register("v-1", path, base_model="org/model-b")
    assert reg.register("v-1", path, base_model="org/model-a").base_model == "org/model-a"


def test_get_unknown_lists_known_names(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "r")
    reg.register("v-1", make_adapter(tmp_path / "a"))
    with pytest.raises(AdapterRegistryError, match=r"no adapter named 'v-9'.*registered: v-1"):
        reg.get("v-9")


def test_corrupt_index_is_an_error_not_a_silent_reset(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "r")
    reg.register("v-1", make_adapter(tmp_path / "a"))
    reg.index_path.write_text('{"adapters": {"v-1": ')
    with pytest.raises(AdapterRegistryError, match="registry.json is unreadable"):
        reg.list()
    with pytest.raises(AdapterRegistryError, match="unreadable"):
        reg.register("v-2", make_adapter(tmp_path / "b"))
    assert reg.index_path.read_text() == '{"adapters": {"v-1": '  # left for the user to inspect


def _register_many(root: str, adapter: str, worker: int, count: int) -> None:
    reg = AdapterRegistry(root)
    for i in range(count):
        reg.register(f"w{worker}-{i}", adapter)


def test_concurrent_processes_lose_no_entries(tmp_path: Path) -> None:
    adapter = str(make_adapter(tmp_path / "a"))
    root = str(tmp_path / "r")
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_register_many, args=(root, adapter, w, 10)) for w in range(3)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
        assert p.exitcode == 0
    entries = AdapterRegistry(root).list()
    assert len(entries) == 30
    assert sorted(e.seq for e in entries) == list(range(1, 31))
    assert not list(Path(root).glob("*.tmp"))
