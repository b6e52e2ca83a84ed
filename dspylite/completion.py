"""What one LM call returns, kept whole so training can use exactly what the model produced."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class Completion:
    """One choice of one LM call.

    ``token_ids`` / ``prompt_token_ids`` / ``logprobs`` are filled when the server returns them
    (vLLM does when the request sets ``return_token_ids`` and ``logprobs``); training prefers them
    over re-tokenizing ``text``.
    """

    text: str
    model: str
    finish_reason: str | None = None
    token_ids: list[int] | None = None
    prompt_token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    usage: dict[str, int] = field(default_factory=dict)
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Completion:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@runtime_checkable
class LanguageModel(Protocol):
    """What adapters and modules need from an LM. ``dspylite.LM`` and ``DummyLM`` implement it."""

    model: str

    def generate(
        self, messages: list[dict[str, Any]], *, n: int = 1, rollout_id: int | None = None, **kwargs: Any
    ) -> list[Completion]: ...

    def copy(self, **overrides: Any) -> LanguageModel: ...

    def dump_state(self) -> dict[str, Any]: ...
