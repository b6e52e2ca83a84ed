"""DummyLM: a scripted LM for tests, answering through the real adapter format (DSPy's ``DummyLM``).

- ``DummyLM([{"answer": "4"}, {"answer": "5"}])`` answers each call with the next dict, in order;
  once the list is used up it answers ``{"answer": "No more responses"}``, as DSPy's does.
- ``DummyLM({"2+2": {"answer": "4"}})`` answers with the dict whose key occurs in the last message,
  and with the text ``No more responses`` when no key does.
- ``follow_examples=True`` repeats a demo's answer when the current inputs equal that demo's.
- ``reasoning=True`` adds native reasoning content ("Some reasoning") to every answer.

The dicts are rendered as the adapter renders outputs, so the real parsing path runs: the
``adapter`` given here, else the JSON adapter when the request asks for structured output, else the
configured adapter, else the chat adapter. ``history`` keeps every call (messages, request kwargs,
rollout id, outputs) for assertions.
"""

from __future__ import annotations

import threading
from typing import Any

from dspylite.clients.base_lm import BaseLM, _calls_generate

NO_MORE_RESPONSES = "No more responses"


class DummyLM(BaseLM):
    def __init__(
        self,
        answers: list[dict[str, Any]] | dict[str, dict[str, Any]],
        follow_examples: bool = False,
        reasoning: bool = False,
        adapter: Any = None,
        *,
        model: str = "dummy",
    ):
        if not isinstance(answers, (list, dict)):
            raise TypeError(
                "DummyLM answers must be a list of output dicts or a dict keyed by input substring"
            )
        super().__init__(model, "chat", 0.0, 1000, True)
        self.answers = answers
        self.follow_examples = follow_examples
        self.reasoning = reasoning
        self.adapter = adapter
        self._script = _Script()

    @_calls_generate
    def __call__(
        self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ):
        messages = messages or [{"role": "user", "content": prompt or ""}]
        return super().__call__(messages=messages, **kwargs)

    def forward(self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any):
        messages = messages or [{"role": "user", "content": prompt or ""}]
        choices = []
        # As in DSPy, each of the n choices takes its own scripted answer (the next one in list mode).
        for _ in range(kwargs.get("n", 1) or 1):
            message: dict[str, Any] = {"content": self._answer(messages, kwargs), "tool_calls": None}
            if self.reasoning:
                message["reasoning_content"] = "Some reasoning"
            choices.append({"message": message, "finish_reason": "stop"})
        # A request that costs no tokens, reported to track_usage() as such.
        return {
            "choices": choices,
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "model": self.model,
        }

    def _answer(self, messages: list[dict[str, Any]], kwargs: dict[str, Any]) -> str:
        last_user = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        if self.follow_examples:
            demo = _matching_demo(messages, last_user)
            if demo is not None:
                return demo
        if isinstance(self.answers, dict):
            last = _text(messages[-1].get("content")) if messages else ""
            for key, outputs in self.answers.items():
                if key in last:
                    return self._render(outputs, kwargs)
            return NO_MORE_RESPONSES
        with self._script.lock:
            if self._script.index < len(self.answers):
                outputs = self.answers[self._script.index]
                self._script.index += 1
            else:
                outputs = {"answer": NO_MORE_RESPONSES}
        return self._render(outputs, kwargs)

    def _render(self, outputs: dict[str, Any], kwargs: dict[str, Any]) -> str:
        from dspylite.adapters.chat import FieldInfoWithName
        from dspylite.signatures import OutputField

        fields = {FieldInfoWithName(name=name, info=OutputField()): value for name, value in outputs.items()}
        adapter = self._adapter_for(kwargs)
        try:
            return adapter.format_field_with_value(fields, role="assistant")
        except TypeError:  # adapters whose format_field_with_value takes no role (ChatAdapter)
            return adapter.format_field_with_value(fields)

    def _adapter_for(self, kwargs: dict[str, Any]) -> Any:
        if self.adapter is not None:
            return self.adapter
        if "response_format" in kwargs:
            from dspylite.adapters.json_adapter import JSONAdapter

            return JSONAdapter()
        from dspylite import settings
        from dspylite.modules.predict import _default_adapter

        configured = settings.current().adapter
        return configured if hasattr(configured, "format_field_with_value") else _default_adapter()

    def get_convo(self, index: int) -> tuple[Any, Any]:
        """The messages and the outputs of the ``index``-th call."""
        return self.history[index]["messages"], self.history[index]["outputs"]

    def copy(self, **overrides: Any) -> DummyLM:
        """A view on the same script (each history entry names its model), e.g. bound to an adapter name."""
        new = super().copy(**overrides)
        new._script = self._script
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> DummyLM:
        return self  # a program copy keeps answering from the same script

    def __repr__(self) -> str:
        return f"DummyLM(model={self.model!r}, answers={len(self.answers)})"


class _Script:
    """Position in the scripted answers, shared by a DummyLM and its copies."""

    def __init__(self) -> None:
        self.index = 0
        self.lock = threading.Lock()


def _text(content: Any) -> str:
    if isinstance(content, list):  # OpenAI content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def _matching_demo(messages: list[dict[str, Any]], last_user: str) -> str | None:
    """The assistant turn after a demo whose user turn holds the same inputs as the current one.

    Demo user turns carry only the input fields; the current one adds the reply instructions after
    a blank line, so a match is equality or a prefix ending at that blank line.
    """
    for i in range(len(messages) - 2):
        m = messages[i]
        if m.get("role") != "user" or messages[i + 1].get("role") != "assistant":
            continue
        content = _text(m.get("content"))
        if last_user == content or last_user.startswith(content + "\n\n"):
            return _text(messages[i + 1].get("content"))
    return None


__all__ = ["DummyLM"]
