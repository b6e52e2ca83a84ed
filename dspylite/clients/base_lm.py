"""``BaseLM``: DSPy's base class of language models, and the plug-in point for a custom one.

Subclass it and implement ``forward(prompt=None, messages=None, **kwargs)`` returning an
OpenAI-shaped chat completion (an object with attributes or a plain dict): ``choices[i].message
.content``, optional ``tool_calls``, ``reasoning_content``, ``finish_reason``, ``usage`` and ``model``.
``BaseLM`` turns that into DSPy's outputs (``lm(...)`` returns strings, or dicts when tool calls,
reasoning or logprobs come along) and into dspylite's ``Completion`` objects (``generate``), records
history and usage, and runs callbacks, so the subclass works everywhere an ``LM`` does.

State: ``dump_state()`` names the class under ``_dspy_lm_class`` (DSPy's key); ``BaseLM.load_state``
rebuilds the built-in ``LM`` from any state, and imports another class only when the caller trusts
the file (``allow_custom_lm_class=True``; programs pass ``allow_unsafe_lm_state=True``).
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import inspect
import time
import uuid
from collections import deque
from typing import Any

from dspylite.completion import Completion
from dspylite.errors import LMRequestError
from dspylite.utils.callback import with_callbacks
from dspylite.utils.inspect_history import GLOBAL_HISTORY, render_history
from dspylite.utils.usage_tracker import record_usage

LM_CLASS_STATE_KEY = "_dspy_lm_class"
# How saved states name the built-in LM: DSPy's path, so the files load in DSPy as well.
BUILTIN_LM_CLASS_PATH = "dspy.clients.lm.LM"
_BUILTIN_LM_CLASS_PATHS = (BUILTIN_LM_CLASS_PATH, "dspylite.lm.LM", "dspylite.clients.lm.LM")


def _calls_generate(method: Any) -> Any:
    """Mark an LM ``__call__`` that answers through ``generate``: adapters then call ``generate``
    directly and keep everything it returns (token ids, logprobs, finish reason)."""
    method._dspylite_calls_generate = True
    return method


class BaseLM:
    def __init__(
        self,
        model: str,
        model_type: str = "chat",
        temperature: float | None = 0.0,
        max_tokens: int | None = 1000,
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

    # ---- capabilities adapters consult ----------------------------------------------------------
    @property
    def supports_function_calling(self) -> bool:
        return False

    @property
    def supports_reasoning(self) -> bool:
        return False

    @property
    def supports_response_schema(self) -> bool:
        return False

    @property
    def supported_params(self) -> set[str]:
        return set()

    # ---- what a subclass implements -----------------------------------------------------------
    def forward(
        self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> Any:
        raise NotImplementedError(
            f"{type(self).__name__} must implement forward(prompt=None, messages=None, **kwargs) returning "
            "an OpenAI-shaped response (choices[i].message.content, usage, model)"
        )

    async def aforward(
        self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> Any:
        return await asyncio.to_thread(self.forward, prompt=prompt, messages=messages, **kwargs)

    # ---- DSPy's call shape ---------------------------------------------------------------------
    @_calls_generate
    def __call__(
        self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> list[Any]:
        """The choices as DSPy returns them: strings, or dicts when more than text came back."""
        if prompt is None and messages is None:
            raise ValueError(f"{type(self).__name__} call needs 'prompt' or 'messages'")
        n = kwargs.pop("n", 1) or 1
        rollout_id = kwargs.pop("rollout_id", None)
        return [
            c.as_output()
            for c in self.generate(messages, prompt=prompt, n=n, rollout_id=rollout_id, **kwargs)
        ]

    @_calls_generate
    async def acall(
        self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> list[Any]:
        return await asyncio.to_thread(self.__call__, prompt=prompt, messages=messages, **kwargs)

    # ---- dspylite's call shape (what adapters use) ------------------------------------------------
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
        params = dict(kwargs)
        if n != 1:
            params["n"] = n
        if rollout_id is not None and (params.get("temperature", self.kwargs.get("temperature")) or 0) > 0:
            params["rollout_id"] = rollout_id  # DSPy passes it through; forward may use or drop it
        start = time.perf_counter()
        response = self.forward(prompt=prompt, messages=messages, **{**self.kwargs, **params})
        completions = self._completions(response)
        usage = _as_dict(_get(response, "usage")) or {}
        if not _get(response, "cache_hit"):
            record_usage(self.model, usage)
        self.update_history(
            {
                "timestamp": time.time(),
                "uuid": str(uuid.uuid4()),
                "model": self.model,
                "model_type": self.model_type,
                "messages": messages,
                "prompt": prompt,
                "kwargs": {k: v for k, v in params.items() if not k.startswith("api_")},
                "rollout_id": rollout_id,
                "outputs": [c.as_output() for c in completions],
                "usage": usage,
                "cached": bool(_get(response, "cache_hit")),
                "duration_s": time.perf_counter() - start,
            }
        )
        return completions

    def _completions(self, response: Any) -> list[Completion]:
        choices = _get(response, "choices")
        if choices is None:
            raise LMRequestError(
                f"{type(self).__name__}.forward returned no choices; it must return an OpenAI-shaped "
                f"response with choices[i].message.content, got {type(response).__name__}",
                status_code=0,
            )
        model = _get(response, "model") or self.model
        usage = _as_dict(_get(response, "usage")) or {}
        want_logprobs = bool(self.kwargs.get("logprobs"))
        completions = []
        for choice in choices:
            message = _get(choice, "message")
            text = _get(message, "content") if message is not None else _get(choice, "text")
            citations = _citations(message)
            completions.append(
                Completion(
                    text=text,
                    model=str(model),
                    finish_reason=_get(choice, "finish_reason"),
                    usage={k: v for k, v in usage.items() if isinstance(v, int)},
                    logprobs=_get(choice, "logprobs") if want_logprobs else None,
                    tool_calls=_get(message, "tool_calls") or None,
                    reasoning_content=_get(message, "reasoning_content") or None,
                    citations=citations,
                )
            )
        return completions

    # ---- the rest of the LM protocol --------------------------------------------------------------
    def copy(self, **overrides: Any) -> BaseLM:
        """A copy with some settings changed: attributes (``model=``, ``cache=``) or request
        parameters (``temperature=``); ``None`` removes a request parameter. History is not shared."""
        new = copy.copy(self)
        new.history = deque(maxlen=10_000)
        new.callbacks = list(getattr(self, "callbacks", []) or [])
        new.kwargs = dict(getattr(self, "kwargs", {}) or {})
        for key, value in overrides.items():
            if hasattr(self, key) and key != "kwargs":
                setattr(new, key, value)
            if key in new.kwargs or not hasattr(self, key):
                if value is None:
                    new.kwargs.pop(key, None)
                else:
                    new.kwargs[key] = value
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> BaseLM:
        return self.copy()

    def dump_state(self) -> dict[str, Any]:
        """The settings to rebuild this LM with, the API key never among them."""
        filtered = {k: v for k, v in self.kwargs.items() if k not in ("api_key", LM_CLASS_STATE_KEY)}
        return {
            LM_CLASS_STATE_KEY: lm_class_path(type(self)),
            "model": self.model,
            "model_type": self.model_type,
            "cache": self.cache,
            "num_retries": getattr(self, "num_retries", 3),
            **filtered,
        }

    @classmethod
    def load_state(cls, state: dict[str, Any], *, allow_custom_lm_class: bool = False) -> BaseLM:
        """Rebuild an LM from ``dump_state()``. A state without a class, or naming DSPy's or
        dspylite's ``LM``, builds an ``LM``; another class is imported only with
        ``allow_custom_lm_class=True`` (importing runs that module's code)."""
        state = dict(state)
        class_path = state.pop(LM_CLASS_STATE_KEY, None)
        if cls is not BaseLM:
            return cls(**state)
        if class_path is None or class_path in _BUILTIN_LM_CLASS_PATHS:
            from dspylite.lm import LM

            return LM.load_state(state)
        if not allow_custom_lm_class:
            raise ValueError(
                f"Refusing to import custom serialized LM class `{class_path}`. "
                "Pass allow_unsafe_lm_state=True when loading trusted files to enable custom LM classes."
            )
        lm_cls = _import_lm_class(class_path)
        if not issubclass(lm_cls, BaseLM):
            raise TypeError(f"Serialized LM class `{class_path}` must be a subclass of dspy.BaseLM.")
        if "allow_custom_lm_class" in inspect.signature(lm_cls.load_state).parameters:
            return lm_cls.load_state(state, allow_custom_lm_class=allow_custom_lm_class)
        return lm_cls.load_state(state)

    def inspect_history(self, n: int = 1) -> str:
        """The last ``n`` calls of this LM, as text (nothing is printed)."""
        return render_history(list(self.history)[-n:] if n > 0 else [])

    def update_history(self, entry: dict[str, Any]) -> None:
        record_history(self, entry)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"


def lm_class_path(lm_class: type) -> str:
    from dspylite.lm import LM

    if lm_class is LM:
        return BUILTIN_LM_CLASS_PATH
    return f"{lm_class.__module__}.{lm_class.__qualname__}"


def _import_lm_class(class_path: str) -> type:
    """The class at a dotted path (``pkg.module.Outer.Inner``); DSPy paths map to dspylite's modules."""
    if class_path.startswith("dspy."):
        class_path = "dspylite." + class_path[len("dspy.") :]
    parts = class_path.split(".")
    last_error: Exception | None = None
    for split_index in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split_index])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name or module_name.startswith(f"{exc.name}."):
                last_error = exc
                continue
            raise
        try:
            for attr in parts[split_index:]:
                obj = getattr(obj, attr)
        except AttributeError as exc:
            last_error = exc
            continue
        if not isinstance(obj, type):
            raise TypeError(f"Serialized LM class `{class_path}` did not resolve to a class.")
        return obj
    raise ImportError(f"Could not import serialized LM class `{class_path}`.") from last_error


def record_history(lm: Any, entry: dict[str, Any]) -> None:
    """Record one call in the process history, the LM's and every calling module's (as DSPy does),
    unless ``disable_history``; module histories keep at most ``max_history_size`` entries."""
    from dspylite import settings

    state = settings.current()
    if state.disable_history:
        return
    GLOBAL_HISTORY.append(entry)
    if state.max_history_size == 0:
        return
    from dspylite.modules.module import CALLER_MODULES

    for owner in (lm, *CALLER_MODULES.get()):
        history = getattr(owner, "history", None)
        if history is None:
            continue
        while len(history) >= state.max_history_size:
            history.popleft() if isinstance(history, deque) else history.pop(0)
        history.append(entry)


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


def _citations(message: Any) -> list[Any] | None:
    """Citations a provider returned with the message (LiteLLM's ``provider_specific_fields``)."""
    fields = _get(message, "provider_specific_fields") or {}
    data = fields.get("citations") if isinstance(fields, dict) else None
    if not isinstance(data, list):
        return None
    return [c for group in data for c in (group if isinstance(group, list) else [group])] or None


__all__ = ["BUILTIN_LM_CLASS_PATH", "LM_CLASS_STATE_KEY", "BaseLM", "lm_class_path", "record_history"]
