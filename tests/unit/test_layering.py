"""Libraries below, recipes above: the import graph the design asks for, checked on every file.

dspylite core and optimizers, finetune/, rl/, serving/ and sources/ never import the job layer
(dspylite.jobs) or the CLI; finetune/ and rl/ never import dspylite.optimizers (the optimizers are
front-ends over them, not the other way round); sources/ (models and data sets) sits below serving and
training, so it imports none of them nor the optimizers. Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ("dspylite.jobs", "dspylite.cli")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from dspylite import jobs` imports the package dspylite.jobs
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def library_files() -> list[Path]:
    files = []
    for package in ("dspylite", "finetune", "rl", "serving", "sources"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith("dspylite/jobs/") or relative == "dspylite/cli.py":
                continue
            files.append(path)
    return files


def violations(path: Path) -> list[str]:
    relative = path.relative_to(ROOT).as_posix()
    forbidden = list(RECIPES)
    if relative.startswith(("finetune/", "rl/")):
        forbidden.append("dspylite.optimizers")
    if relative.startswith("sources/"):
        forbidden += ["dspylite.optimizers", "finetune", "rl", "serving"]
    bad = []
    for line, module in imported_modules(path):
        for prefix in forbidden:
            if module == prefix or module.startswith(prefix + "."):
                bad.append(f"{relative}:{line} imports {module}")
    return bad


def test_the_checker_catches_an_upward_import(tmp_path: Path) -> None:
    source = tmp_path / "rl" / "x.py"
    source.parent.mkdir()
    source.write_text("def f():\n    from dspylite.jobs.session import open_session\n")
    assert imported_modules(source) == [
        (2, "dspylite.jobs.session"),
        (2, "dspylite.jobs.session.open_session"),
    ]


@pytest.mark.parametrize("path", library_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_libraries_never_import_recipes(path: Path) -> None:
    assert violations(path) == []


def test_the_job_layer_does_not_import_the_cli() -> None:
    bad = []
    for path in sorted((ROOT / "dspylite" / "jobs").rglob("*.py")):
        bad += [
            f"{path.name}:{line}"
            for line, module in imported_modules(path)
            if module.startswith("dspylite.cli")
        ]
    assert bad == []
