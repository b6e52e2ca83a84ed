"""``BaseLM``: DSPy's plug-in point for a custom language model.

Subclass it and implement ``forward(prompt=None, messages=None, **kwargs)`` returning an
OpenAI-shaped chat completion (an object with attributes or a plain dict): ``choices[i].message
.content``, optional ``choices[i].finish_reason``, ``usage`` and ``model``. ``BaseLM`` turns that
into dspylite's ``Completion`` objects, so the subclass works everywhere an ``LM`` does (Predict,
optimizers, traces), records history and usage, and runs callbacks.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from typing import Any

from dspylite.completion import Completion
from dspylite.errors import LMRequestError
from dspylite.utils.callback import with_callbacks
from dspylite.utils.inspect_history import GLOBAL_HISTORY, render_history
from dspylite.utils.usage_tracker import record_usage


class _LMType(type):
    """``isinstance(x, BaseLM)`` also holds for dspylite's built-in LMs (``LM``, ``DummyLM``), which
    do not inherit from it, as DSPy's ``LM`` is a ``BaseLM``."""

    def __instancecheck__(cls, instance: Any) -> bool:
        if type.__instancecheck__(cls, instance):
            return True
        if cls is not BaseLM:
            return False
        from dspylite.lm import LM
        from dspylite.utils.dummy_lm import DummyLM

        return isinstance(instance, (LM, DummyLM))


class BaseLM(metaclass=_LMType):
    def __init__(
        self,
        model: str,
        model_type: str = "chat",
        temperature: float = 0.0,
        max_tokens: int = 1000,
        cache: bool = True,
        callbacks: list | None = None,
        num_retries: int = 3,
        **kwargs: Any,
    ):
        self.model = model
        self.model_type = model_type
        self.cache = cache
        self.callbacks = list(callbacks or [])
        self.num_retries = num_retries
        self.kwargs: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens, **kwargs}
        self.history: deque[dict[str, Any]] = deque(maxlen=10_000)
        self._lock = threading.Lock()

    # ---- what a subclass implements -----------------------------------------------------------
    def forward(
        self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> Any:
        raise NotImplementedError(
            f"{type(self).__name__} must implement forward(prompt=None, messages=None, **kwargs) returning "
            "an OpenAI-shaped response (choices[i].message.content, usage, model)"
        )

    # ---- DSPy's call shape ---------------------------------------------------------------------
    def __call__(
        self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> list[str]:
        if prompt is None and messages is None:
            raise ValueError(f"{type(self).__name__} call needs 'prompt' or 'messages'")
        return [c.text for c in self.generate(messages, prompt=prompt, **kwargs)]

    # ---- dspylite's call shape (what Predict uses) ------------------------------------------------
    @with_callbacks
    def generate(
        self,
        messages: list[dict[str, Any]] | None,
        *,
        n: int = 1,
        rollout_id: int | None = None,
        prompt: str | None = None,
        **kwargs: Any,
    ) -> list[Completion]:
        kwargs.pop("cache", None)  # caching is the subclass's business
        params = {**self.kwargs, **kwargs}
        if n != 1:
            params["n"] = n
        if rollout_id is not None and (params.get("temperature") or 0) > 0:
            params["rollout_id"] = rollout_id  # DSPy passes it through; forward may use or drop it
        start = time.perf_counter()
        response = self.forward(prompt=prompt, messages=messages, **params)
        completions = self._completions(response)
        usage = _as_dict(_get(response, "usage")) or {}
        record_usage(self.model, usage)
        entry = {
            "timestamp": time.time(),
            "model": self.model,
            "messages": messages,
            "prompt": prompt,
            "kwargs": params,
            "rollout_id": rollout_id,
            "outputs": [c.text for c in completions],
            "usage": usage,
            "cached": False,
            "duration_s": time.perf_counter() - start,
        }
        with self._lock:
            self.history.append(entry)
        GLOBAL_HISTORY.append(entry)
        return completions

    def _completions(self, response: Any) -> list[Completion]:
        choices = _get(response, "choices")
        if not choices:
            raise LMRequestError(
                f"{type(self).__name__}.forward returned no choices; it must return an OpenAI-shaped "
                f"response with choices[i].message.content, got {type(response).__name__}"
            )
        model = _get(response, "model") or self.model
        usage = _as_dict(_get(response, "usage")) or {}
        completions = []
        for choice in choices:
            message = _get(choice, "message")
            text = _get(message, "content") if message is not None else _get(choice, "text")
            completions.append(
                Completion(
                    text=text or "",
                    model=str(model),
                    finish_reason=_get(choice, "finish_reason"),
                    usage={k: v for k, v in usage.items() if isinstance(v, int)},
                )
            )
        return completions

    # ---- the rest of the LM protocol --------------------------------------------------------------
    def copy(self, **overrides: Any) -> BaseLM:
        """A copy with some settings changed (``model=`` binds another served model or adapter)."""
        new = copy.copy(self)
        new.kwargs = dict(self.kwargs)
        new.history = deque(maxlen=10_000)
        new._lock = threading.Lock()
        for name, value in overrides.items():
            if name in ("model", "model_type", "cache", "num_retries", "callbacks"):
                setattr(new, name, value)
            else:
                new.kwargs[name] = value
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> BaseLM:
        return self.copy()

    def dump_state(self) -> dict[str, Any]:
        return {"model": self.model, "model_type": self.model_type, "cache": self.cache, **self.kwargs}

    def inspect_history(self, n: int = 1) -> str:
        """The last ``n`` calls of this LM, as text (nothing is printed)."""
        return render_history(list(self.history)[-n:] if n > 0 else [])

    def update_history(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.history.append(entry)
        GLOBAL_HISTORY.append(entry)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def _as_dict(value: Any) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    if hasattr(value, "model_dump"):
        return value.model_dump()
    return (
        {k: v for k, v in vars(value).items() if not k.startswith("_")}
        if hasattr(value, "__dict__")
        else None
    )


__all__ = ["BaseLM"]
