"""Fixtures for unit tests: a local fake vLLM server (no network beyond 127.0.0.1)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/ is not a package; make its helper modules (fake_vllm_server) importable from any rootdir.
_TESTS_DIR = str(Path(__file__).resolve().parents[1])
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from fake_vllm_server import FakeVLLM  # noqa: E402


@pytest.fixture
def fake_server() -> Iterator[FakeVLLM]:
    """A fresh fake vLLM per test; serves the model name ``stub-model``."""
    with FakeVLLM() as server:
        yield server


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    """A base-model directory as the serving code sees one: a ``config.json`` and nothing else."""
    path = tmp_path / "models" / "tiny"
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path.resolve()
