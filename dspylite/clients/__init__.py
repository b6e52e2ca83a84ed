"""LM clients, as ``dspy.clients``: ``LM`` (OpenAI-compatible servers) and ``BaseLM`` (custom LMs)."""

from __future__ import annotations

from typing import Any

from dspylite.clients.base_lm import BaseLM

__all__ = ["BaseLM", "LM"]


def __getattr__(name: str) -> Any:
    if name == "LM":  # dspylite.lm imports this package: load it on first use
        from dspylite.lm import LM

        return LM
    raise AttributeError(f"module 'dspylite.clients' has no attribute {name!r}")
