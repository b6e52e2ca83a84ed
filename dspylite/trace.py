"""Trace records: what each predictor call sent to the model and what came back.

One record type feeds every optimizer: few-shot bootstrapping reads ``inputs``/``outputs``,
SFT reads ``messages`` + ``completion`` (+ token ids), GRPO reads token ids and logprobs.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dspylite import settings as _settings


@dataclass
class TraceRecord:
    predictor_name: str  # dotted name inside the program, e.g. "extract.predict"
    signature: str  # "context, question -> answer" (the fields, for grouping and checks)
    inputs: dict[str, Any]
    messages: list[dict[str, Any]]  # exactly what was sent
    completion: str  # the raw text the model produced
    model: str  # the served model name the server's answer gives: base model or adapter version
    adapter: str  # which adapter formatted it: "chat" or "json"
    outputs: dict[str, Any] | None = None  # parsed outputs; None when parsing failed
    error: str | None = None  # the parse error message, when parsing failed
    prompt_token_ids: list[int] | None = None
    completion_token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    finish_reason: str | None = None
    example_id: str | None = None
    rollout_id: int | None = None
    lm_kwargs: dict[str, Any] = field(default_factory=dict)
    served_by: str | None = None  # api_base of the server that answered (a cached answer: the one that did)
    # The live predictor object (not serialised); lets BootstrapFewShot attach demos.
    predictor: Any = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None and self.outputs is not None

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "predictor"}
        data["inputs"] = _jsonable(self.inputs)
        data["outputs"] = _jsonable(self.outputs)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TraceRecord:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "predictor"})


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "value"):  # Enum
        return value.value
    return str(value)


# The predictor whose adapter call is running in this context: adapters name it in trace records.
_PREDICTOR: contextvars.ContextVar[Any] = contextvars.ContextVar("dspylite_predictor", default=None)


@contextlib.contextmanager
def predictor_call(predictor: Any) -> Iterator[None]:
    """Mark ``predictor`` as the caller of the adapter calls made inside the block."""
    token = _PREDICTOR.set(predictor)
    try:
        yield
    finally:
        _PREDICTOR.reset(token)


def current_predictor() -> Any:
    return _PREDICTOR.get()


def record(rec: TraceRecord) -> None:
    """Append to the active capture, if any. Called by Predict after each LM call."""
    sink = _settings.current().trace_sink
    if sink is not None:
        sink.append(rec)


@contextlib.contextmanager
def capture_traces() -> Iterator[list[TraceRecord]]:
    """Collect the TraceRecords of every predictor call made inside the block (this context only).

    >>> with capture_traces() as traces:
    ...     program(question="...")
    """
    sink: list[TraceRecord] = []
    with _settings.context(trace_sink=sink):
        yield sink
