"""DummyLM: a scripted LM for users' own tests, answering through the real adapter format."""

from __future__ import annotations

import functools
import threading
from typing import Any

from dspylite.adapters.base import Adapter
from dspylite.completion import Completion
from dspylite.signatures import OutputField, make_signature
from dspylite.utils.usage_tracker import record_usage


class DummyLM:
    """DSPy's semantics.

    - ``DummyLM([{"answer": "4"}, {"answer": "5"}])`` answers each call with the next dict, in order.
    - ``DummyLM({"2+2": {"answer": "4"}})`` answers with the dict whose key occurs in the last user
      message (an empty answer, which fails to parse, when no key matches).
    - ``follow_examples=True`` repeats a demo's answer when the current inputs equal that demo's.

    The dicts are rendered by the adapter's ``format_completion``, so the real parsing path runs:
    the ``adapter`` given here, else the JSON adapter when the request asks for structured output,
    else the configured adapter, else the chat adapter.
    ``history`` keeps every call (messages, request kwargs, rollout id, outputs) for assertions.
    """

    def __init__(
        self,
        answers: list[dict[str, Any]] | dict[str, dict[str, Any]],
        follow_examples: bool = False,
        adapter: Adapter | None = None,
        model: str = "dummy",
    ):
        if not isinstance(answers, (list, dict)):
            raise TypeError(
                "DummyLM answers must be a list of output dicts or a dict keyed by input substring"
            )
        self.answers = answers
        self.follow_examples = follow_examples
        self.adapter = adapter
        self.model = model
        self.kwargs: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self._state = _Script()

    def generate(
        self, messages: list[dict[str, Any]], *, n: int = 1, rollout_id: int | None = None, **kwargs: Any
    ) -> list[Completion]:
        # As in DSPy, each of the n choices takes its own scripted answer (the next one in list mode).
        texts = [self._answer(messages, kwargs) for _ in range(n)]
        with self._state.lock:
            self.history.append(
                {
                    "messages": messages,
                    "kwargs": kwargs,
                    "rollout_id": rollout_id,
                    "model": self.model,
                    "outputs": texts,
                }
            )
        # Like DSPy's DummyLM: a request that costs no tokens, reported to track_usage() as such.
        record_usage(self.model, {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
        return [Completion(text=text, model=self.model, finish_reason="stop") for text in texts]

    def __call__(
        self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> list[str]:
        messages = messages or [{"role": "user", "content": prompt or ""}]
        return [c.text for c in self.generate(messages, **kwargs)]

    def _answer(self, messages: list[dict[str, Any]], kwargs: dict[str, Any]) -> str:
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        if self.follow_examples:
            demo = _matching_demo(messages, last_user)
            if demo is not None:
                return demo
        if isinstance(self.answers, dict):
            for key, outputs in self.answers.items():
                if key in last_user:
                    return self._render(outputs, kwargs)
            return self._render({}, kwargs)
        with self._state.lock:
            if self._state.index >= len(self.answers):
                raise IndexError(f"DummyLM ran out of scripted answers after {len(self.answers)} calls")
            outputs = self.answers[self._state.index]
            self._state.index += 1
        return self._render(outputs, kwargs)

    def _render(self, outputs: dict[str, Any], kwargs: dict[str, Any]) -> str:
        return self._adapter_for(kwargs).format_completion(_answer_signature(tuple(outputs)), outputs)

    def _adapter_for(self, kwargs: dict[str, Any]) -> Adapter:
        if self.adapter is not None:
            return self.adapter
        if "response_format" in kwargs:
            from dspylite.adapters.json_adapter import JSONAdapter

            return JSONAdapter()
        from dspylite import settings
        from dspylite.adapters.chat import ChatAdapter

        return settings.current().adapter or ChatAdapter()

    def copy(self, **overrides: Any) -> DummyLM:
        """A view on the same script and history (each entry names its model), e.g. bound to an adapter name."""
        new = object.__new__(DummyLM)
        new.__dict__.update(self.__dict__)
        new.model = overrides.pop("model", self.model)
        new.kwargs = {**self.kwargs, **overrides}
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> DummyLM:
        return self  # a program copy keeps answering from the same script

    def dump_state(self) -> dict[str, Any]:
        return {"model": self.model, "model_type": "chat", **self.kwargs}

    def __repr__(self) -> str:
        return f"DummyLM(model={self.model!r}, answers={len(self.answers)})"


@functools.lru_cache(maxsize=256)
def _answer_signature(names: tuple[str, ...]) -> type:
    """An all-outputs signature to render a scripted answer (cached: building classes per call is slow)."""
    return make_signature({k: (Any, OutputField()) for k in names} or {"_": (Any, OutputField())})


class _Script:
    """Position in the scripted answers, shared by a DummyLM and its copies."""

    def __init__(self) -> None:
        self.index = 0
        self.lock = threading.Lock()


def _matching_demo(messages: list[dict[str, Any]], last_user: str) -> str | None:
    """The assistant turn after a demo whose user turn holds the same inputs as the current one.

    Demo user turns carry only the input fields; the current one may add the reply instructions
    after a blank line, so a match is equality or a prefix ending at that blank line.
    """
    for i in range(len(messages) - 2):
        m = messages[i]
        if m["role"] != "user" or messages[i + 1]["role"] != "assistant":
            continue
        content = m["content"]
        if last_user == content or last_user.startswith(content + "\n\n"):
            return messages[i + 1]["content"]
    return None
