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
    # What native LM features return next to the text: OpenAI-shaped tool calls, the reasoning of a
    # reasoning model, provider citations.
    tool_calls: list[Any] | None = None
    reasoning_content: str | None = None
    citations: list[Any] | None = None
    # The api_base of the server that produced it (None: unknown, e.g. a scripted LM); with several
    # servers, which one answered. ``model`` is the name the server's answer gives (the adapter version).
    served_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def as_output(self) -> str | dict[str, Any]:
        """The choice as DSPy's ``lm(...)`` returns it: the text, or a dict when more came with it."""
        output: dict[str, Any] = {"text": self.text}
        if self.logprobs is not None:
            output["logprobs"] = self.logprobs
        for name in ("tool_calls", "reasoning_content", "citations"):
            if getattr(self, name):
                output[name] = getattr(self, name)
        return output["text"] if len(output) == 1 else output

    @classmethod
    def from_output(cls, output: Any, model: str = "") -> Completion:
        """One element of what an LM's ``__call__`` returned (a string or DSPy's output dict)."""
        if isinstance(output, dict):
            return cls(
                text=output.get("text"),
                model=model,
                logprobs=output.get("logprobs"),
                tool_calls=output.get("tool_calls"),
                reasoning_content=output.get("reasoning_content"),
                citations=output.get("citations"),
            )
        return cls(text=output, model=model)

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
