"""DummyLM: a scripted LM for users' own tests, answering through the real adapter format."""

from __future__ import annotations

import threading
from typing import Any

from dspylite.adapters.base import Adapter
from dspylite.adapters.chat import ChatAdapter
from dspylite.completion import Completion
from dspylite.signatures import OutputField, make_signature


class DummyLM:
    """DSPy's semantics.

    - ``DummyLM([{"answer": "4"}, {"answer": "5"}])`` answers each call with the next dict, in order.
    - ``DummyLM({"2+2": {"answer": "4"}})`` answers with the dict whose key occurs in the last user
      message.
    - ``follow_examples=True`` repeats a demo's answer when the current input equals that demo's.
    The dicts are rendered by ``adapter.format_completion`` (ChatAdapter by default), so the real
    parsing path runs.
    """

    def __init__(self, answers: list[dict[str, Any]] | dict[str, dict[str, Any]], follow_examples: bool = False,
                 adapter: Adapter | None = None, model: str = "dummy"):
        if not isinstance(answers, (list, dict)):
            raise TypeError("DummyLM answers must be a list of output dicts or a dict keyed by input substring")
        self.answers = answers
        self.follow_examples = follow_examples
        self.adapter = adapter or ChatAdapter()
        self.model = model
        self.history: list[dict[str, Any]] = []
        self._index = 0
        self._lock = threading.Lock()

    def generate(self, messages: list[dict[str, Any]], *, n: int = 1, rollout_id: int | None = None,
                 **kwargs: Any) -> list[Completion]:
        text = self._answer(messages)
        with self._lock:
            self.history.append({"messages": messages, "kwargs": kwargs, "outputs": [text] * n})
        return [Completion(text=text, model=self.model, finish_reason="stop") for _ in range(n)]

    def __call__(self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None,
                 **kwargs: Any) -> list[str]:
        messages = messages or [{"role": "user", "content": prompt or ""}]
        return [c.text for c in self.generate(messages, **kwargs)]

    def _answer(self, messages: list[dict[str, Any]]) -> str:
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        if self.follow_examples:
            for i, m in enumerate(messages[:-1]):
                if m["role"] == "user" and m["content"] == last_user and i + 1 < len(messages) - 1:
                    return messages[i + 1]["content"]
        if isinstance(self.answers, dict):
            for key, outputs in self.answers.items():
                if key in last_user:
                    return self._render(outputs)
            return self._render({})
        with self._lock:
            if self._index >= len(self.answers):
                raise IndexError(f"DummyLM ran out of scripted answers after {len(self.answers)} calls")
            outputs = self.answers[self._index]
            self._index += 1
        return self._render(outputs)

    def _render(self, outputs: dict[str, Any]) -> str:
        signature = make_signature({k: (Any, OutputField()) for k in outputs} or {"_": (Any, OutputField())})
        return self.adapter.format_completion(signature, outputs)

    def copy(self, **overrides: Any) -> DummyLM:
        new = DummyLM(self.answers, self.follow_examples, self.adapter, overrides.get("model", self.model))
        new._index = self._index
        return new

    def dump_state(self) -> dict[str, Any]:
        return {"model": self.model}
