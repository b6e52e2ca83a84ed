"""Fixtures for unit tests: a local OpenAI-compatible stub server (no network beyond 127.0.0.1)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/ is not a package; make its helper modules (stub_openai_server) importable from any rootdir.
_TESTS_DIR = str(Path(__file__).resolve().parents[1])
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from stub_openai_server import StubOpenAIServer  # noqa: E402


@pytest.fixture
def stub_server() -> Iterator[StubOpenAIServer]:
    """A fresh stub server per test; serves the model name ``stub-model``."""
    with StubOpenAIServer() as server:
        yield server
