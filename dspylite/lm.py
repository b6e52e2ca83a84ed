"""``LM``: a client for OpenAI-compatible servers, vLLM's first.

It keeps everything a training step may need from a call (token ids, logprobs, finish reason) on the
returned ``Completion`` objects, retries transient failures (429, 5xx, connection errors, timeouts)
with exponential backoff, caches answers in memory and on disk, and counts usage. A server that
fails ``max_consecutive_failures`` calls in a row trips a circuit breaker: further calls raise
``LMUnavailableError`` at once instead of each waiting ``timeout`` x attempts.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import random
import threading
import time
from collections import deque
from typing import Any

import httpx

from dspylite.cache import LMCache, cache_key, shared_cache
from dspylite.circuit_breaker import CircuitBreaker
from dspylite.clients.base_lm import LM_CLASS_STATE_KEY, BaseLM, lm_class_path, record_history
from dspylite.completion import Completion
from dspylite.errors import (
    ConfigError,
    ContextWindowExceededError,
    LMConnectionError,
    LMRequestError,
    LMResponseError,
    LMServerError,
)
from dspylite.utils.callback import with_callbacks
from dspylite.utils.usage_tracker import record_usage

logger = logging.getLogger(__name__)

DEFAULT_API_BASE = "http://127.0.0.1:8000/v1"
DEFAULT_TIMEOUT = 60.0
# litellm-style provider prefixes that name the protocol, not the model; stripped before sending.
KNOWN_PROVIDER_PREFIXES = ("openai/", "hosted_vllm/", "vllm/", "text-completion-openai/", "custom_openai/")
MODEL_TYPES = ("chat", "text")
# Enough connections for 64 concurrent requests per endpoint with headroom for a second endpoint.
_POOL_LIMITS = httpx.Limits(max_connections=128, max_keepalive_connections=128)
_RETRYABLE_STATUS = frozenset({408, 409, 429})
_MAX_RETRY_AFTER_S = 30.0


def strip_provider_prefix(model: str) -> str:
    """``"hosted_vllm/Qwen/Qwen3-0.6B"`` -> ``"Qwen/Qwen3-0.6B"``; names without a known prefix are kept."""
    for prefix in KNOWN_PROVIDER_PREFIXES:
        if model.startswith(prefix):
            return model[len(prefix) :]
    return model


class _Transport:
    """The HTTP client, round-robin position and circuit breakers shared by an LM and all its copies."""

    def __init__(self) -> None:
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._turn = itertools.count()
        self._breakers: dict[tuple[str, ...], CircuitBreaker] = {}

    def breaker(self, api_bases: tuple[str, ...], threshold: int | None) -> CircuitBreaker:
        """The breaker for one set of endpoints (a copy bound to an adapter shares its server's)."""
        breaker = self._breakers.get(api_bases)
        if breaker is None:
            with self._lock:
                breaker = self._breakers.get(api_bases)
                if breaker is None:
                    breaker = self._breakers[api_bases] = CircuitBreaker(", ".join(api_bases), threshold)
        return breaker

    @property
    def client(self) -> httpx.Client:
        client = self._client
        if client is None:
            # Created on first use: building the SSL context costs milliseconds we don't pay for LMs
            # that are constructed but never called (tests, copies, loaded programs).
            with self._lock:
                if self._client is None:
                    self._client = httpx.Client(limits=_POOL_LIMITS, timeout=None)
                client = self._client
        return client

    def next_index(self, size: int) -> int:
        return next(self._turn) % size if size > 1 else 0

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class Usage:
    """Running totals across threads. ``calls`` counts requests answered by the server."""

    FIELDS = ("prompt_tokens", "completion_tokens", "calls", "cache_hits", "retries")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals = dict.fromkeys(self.FIELDS, 0)

    def add(self, **amounts: int) -> None:
        with self._lock:
            for name, amount in amounts.items():
                self._totals[name] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._totals)

    def reset(self) -> None:
        with self._lock:
            self._totals = dict.fromkeys(self.FIELDS, 0)


class LM(BaseLM):
    """A language model served over the OpenAI protocol (chat or text completions).

    ``model`` may carry a litellm-style provider prefix (``"openai/NAME"``, ``"hosted_vllm/NAME"``),
    which is stripped before it is sent. ``api_base`` (or DSPy's ``base_url``) may be a list of URLs:
    requests then go round-robin over them (and a retry moves on to the next one). Extra keyword
    arguments are sampling parameters sent with every request (``top_p``, ``stop``, ``seed``, ...);
    per-call keyword arguments override them. Pass ``return_token_ids=False`` for providers that
    reject vLLM's extra request field. DSPy's ``provider``, ``finetuning_model``, ``launch_kwargs``,
    ``train_kwargs`` and ``use_developer_role`` are kept (and saved) but do not change requests.

    Usage counts and history belong to this object; ``copy()`` shares the HTTP client and the cache
    but starts its own counts.
    """

    # The serving.backend.Backend that serves this model, when it came from ``backend.lm()``: weight
    # optimizers (BootstrapFinetune, GRPO) train through it, as DSPy's go through ``lm.finetune``.
    # Copies keep it; it is never saved.
    backend: Any = None
    # The dspylite.rotation.Rotation of the serving handle this LM came from (VLLMConnection.lm()):
    # endpoints it takes out of rotation get no more requests. Copies share it; it is never saved.
    rotation: Any = None

    def __init__(
        self,
        model: str,
        api_base: str | list[str] | None = None,
        api_key: str | None = None,
        model_type: str = "chat",
        temperature: float | None = 0.0,
        max_tokens: int | None = 512,
        cache: bool = True,
        num_retries: int = 3,
        timeout: float = DEFAULT_TIMEOUT,
        logprobs: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        history_size: int = 100,
        max_consecutive_failures: int | None = 3,
        callbacks: list | None = None,
        provider: Any = None,
        finetuning_model: str | None = None,
        launch_kwargs: dict[str, Any] | None = None,
        train_kwargs: dict[str, Any] | None = None,
        use_developer_role: bool = False,
        **kwargs: Any,
    ):
        if not isinstance(model, str) or not model:
            raise ConfigError(f"LM: 'model' must be a non-empty string, got {model!r}")
        if model_type not in MODEL_TYPES:
            raise ConfigError(f"LM: 'model_type' must be one of {MODEL_TYPES}, got {model_type!r}")
        _check_settings(
            "LM",
            num_retries=num_retries,
            timeout=timeout,
            temperature=temperature,
            max_tokens=max_tokens,
            max_consecutive_failures=max_consecutive_failures,
        )
        self.model = model
        self.model_type = model_type
        if api_base is None:
            api_base = kwargs.get("base_url")
        elif "base_url" in kwargs:
            raise ConfigError("LM: give 'api_base' or its alias 'base_url', not both")
        self.api_bases = _normalize_api_bases(api_base)
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "EMPTY")
        self.cache = cache
        self.cache_dir = cache_dir
        self.num_retries = num_retries
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.history_size = history_size
        self.max_consecutive_failures = max_consecutive_failures
        self.callbacks = list(callbacks or [])
        self.provider = provider
        self.finetuning_model = finetuning_model
        self.launch_kwargs = dict(launch_kwargs or {})
        self.train_kwargs = dict(train_kwargs or {})
        self.use_developer_role = use_developer_role
        # As DSPy's LM.kwargs: the sampling parameters, plus any endpoint given explicitly (which is
        # saved with the program, and never sent as a request field).
        self.kwargs: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens, **kwargs}
        if api_base is not None and "base_url" not in kwargs:
            self.kwargs["api_base"] = api_base
        if logprobs:
            self.kwargs["logprobs"] = True
        self.history: deque[dict[str, Any]] = deque(maxlen=history_size)
        self._usage = Usage()
        self._transport = _Transport()
        self._cache: LMCache | None = None
        self._set_derived()

    def _set_derived(self) -> None:
        self.served_model = strip_provider_prefix(self.model)
        self._headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        path = "/chat/completions" if self.model_type == "chat" else "/completions"
        self._urls = tuple(base + path for base in self.api_bases)

    # ---- public surface -------------------------------------------------------------------

    @property
    def api_base(self) -> str | list[str]:
        return self.api_bases[0] if len(self.api_bases) == 1 else list(self.api_bases)

    @property
    def temperature(self) -> float:
        return self.kwargs.get("temperature", 0.0)

    @property
    def max_tokens(self) -> int:
        return self.kwargs.get("max_tokens", 512)

    @property
    def supports_response_schema(self) -> bool:
        """vLLM (and OpenAI) enforce a JSON schema given as ``response_format``."""
        return True

    @property
    def supported_params(self) -> set[str]:
        return {"response_format", "n", "logprobs", "seed", "stop", "top_p", "temperature", "max_tokens"}

    @property
    def usage(self) -> dict[str, int]:
        """Totals so far: prompt_tokens, completion_tokens, calls (server requests), cache_hits, retries."""
        return self._usage.snapshot()

    def reset_usage(self) -> None:
        self._usage.reset()

    @property
    def breaker(self) -> CircuitBreaker:
        """This LM's server's circuit breaker (shared with copies that talk to the same server)."""
        return self._transport.breaker(self.api_bases, self.max_consecutive_failures)

    def reset_breaker(self) -> None:
        """Let calls through again after the breaker opened (the server was restarted or fixed)."""
        self.breaker.reset()

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
        """Send one request and return its ``n`` choices.

        ``rollout_id`` is never sent to the server; it only separates cache entries, so K samples of
        the same prompt at temperature > 0 stay K distinct answers. ``cache=False`` as a keyword
        skips the cache for this call.
        """
        use_cache = kwargs.pop("cache", self.cache)
        params = {**self.kwargs, **kwargs} if kwargs else dict(self.kwargs)
        want_logprobs = bool(params.get("logprobs"))
        body = self._build_body(messages, prompt, n, params)

        key = None
        if use_cache:
            key_request = {k: v for k, v in body.items() if k != "return_token_ids"}
            key_request["model_type"] = self.model_type
            key_request["rollout_id"] = rollout_id
            key = cache_key(key_request)
            hit = self._get_cache().get(key)
            if hit is not None:
                self._usage.add(cache_hits=1)
                self._record(body, rollout_id, hit, cached=True, duration=0.0, api_base=None)
                return hit

        start = time.perf_counter()
        breaker = self.breaker
        breaker.check()
        try:
            data, api_base, served_by = self._post(body, breaker)
            prompt_tokens, completion_tokens = _usage_counts(data.get("usage"), api_base)
            completions = self._parse(data, n, want_logprobs=want_logprobs, url=api_base)
            for completion in completions:
                completion.served_by = served_by
        except (LMConnectionError, LMServerError) as exc:
            breaker.record_failure(exc)
            if breaker.is_open:
                # The call that trips the breaker already reports the server as unavailable, so a
                # caller stops here rather than after one more wasted call.
                raise breaker.unavailable_error() from exc
            raise
        breaker.record_success()
        self._usage.add(calls=1, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        record_usage(self.model, {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens})
        if key is not None:
            self._get_cache().put(key, completions)
        self._record(
            body,
            rollout_id,
            completions,
            cached=False,
            duration=time.perf_counter() - start,
            api_base=api_base,
        )
        return completions

    def inspect_history(self, n: int = 1) -> str:
        """The last ``n`` calls, rendered as text (nothing is printed)."""
        entries = list(self.history)[-n:] if n > 0 else []
        blocks = []
        for entry in entries:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["timestamp"]))
            source = "cache" if entry["cached"] else entry["api_base"]
            lines = [f"[{when}] model={entry['model']} from {source} ({entry['duration_s'] * 1000:.0f} ms)"]
            if entry.get("messages") is not None:
                for message in entry["messages"]:
                    lines.append(f"--- {message.get('role', '?')} ---")
                    lines.append(_content_text(message.get("content")))
            else:
                lines.append("--- prompt ---")
                lines.append(str(entry.get("prompt")))
            for i, text in enumerate(entry["outputs"]):
                lines.append(f"--- response {i + 1}/{len(entry['outputs'])} ---")
                lines.append(text)
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)

    def copy(self, **overrides: Any) -> LM:
        """A new LM with some settings changed, sharing this one's HTTP client and cache.

        ``lm.copy(model="adapter-v3")`` binds the same server to a served LoRA adapter.
        Sampling parameters (``temperature=...``, ``top_p=...``) can be overridden the same way.
        """
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.kwargs = dict(self.kwargs)
        new.callbacks = list(self.callbacks)
        new.history = deque(maxlen=self.history_size)
        new._usage = Usage()
        for name, value in overrides.items():
            if name in ("api_base", "base_url"):
                new.api_bases = _normalize_api_bases(value)
                if new.api_bases != self.api_bases:
                    new.rotation = None  # other servers: the handle's rotation says nothing about them
                if name in new.kwargs or "api_base" in new.kwargs:
                    new.kwargs[name] = value
            elif name in _INSTANCE_SETTINGS:
                if name in _CHECKED_SETTINGS:
                    _check_settings("LM.copy", **{name: value})
                if name == "model_type" and value not in MODEL_TYPES:
                    raise ConfigError(f"LM.copy: 'model_type' must be one of {MODEL_TYPES}, got {value!r}")
                setattr(new, name, value)
            else:
                if name in _CHECKED_SETTINGS:
                    _check_settings("LM.copy", **{name: value})
                new.kwargs[name] = value
        if "history_size" in overrides:
            new.history = deque(maxlen=new.history_size)
        if "cache_dir" in overrides and overrides["cache_dir"] != self.cache_dir:
            new._cache = None
        new._set_derived()
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> LM:
        # Programs are deep-copied by optimizers; the copy must keep talking through the same pool.
        return self.copy()

    def dump_state(self) -> dict[str, Any]:
        """DSPy's LM state (the same keys, so DSPy loads it too), plus dspylite's client settings
        that differ from their defaults. The api_key is never included; the endpoint only when it was
        given explicitly (and loading ignores it unless the file is trusted)."""
        state: dict[str, Any] = {
            LM_CLASS_STATE_KEY: lm_class_path(type(self)),
            "model": self.model,
            "model_type": self.model_type,
            "cache": self.cache,
            "num_retries": self.num_retries,
            "finetuning_model": self.finetuning_model,
            "launch_kwargs": self.launch_kwargs,
            "train_kwargs": self.train_kwargs,
            **{k: v for k, v in self.kwargs.items() if k not in ("api_key", LM_CLASS_STATE_KEY)},
        }
        for name, default in _CLIENT_DEFAULTS.items():
            if getattr(self, name) != default:
                state[name] = getattr(self, name)
        return state

    @classmethod
    def load_state(
        cls,
        state: dict[str, Any],
        api_base: str | list[str] | None = None,
        api_key: str | None = None,
        *,
        allow_custom_lm_class: bool = False,
    ) -> LM:
        """Rebuild an LM from ``dump_state()`` output (dspylite's or DSPy's); ``api_base`` overrides
        the saved one."""
        if "model" not in state:
            raise ConfigError("LM.load_state: the state has no 'model' field")
        # Keys DSPy's LM.dump_state writes that are not request parameters; sending them would be a 400.
        config = {k: v for k, v in state.items() if k not in _DSPY_ONLY_STATE_KEYS}
        if api_base is not None:
            config.pop("base_url", None)
            config["api_base"] = api_base
        return cls(**config, api_key=api_key)

    def close(self) -> None:
        """Close the HTTP connections (shared with copies; a later call reopens them)."""
        self._transport.close()

    def __repr__(self) -> str:
        return f"LM(model={self.model!r}, model_type={self.model_type!r}, api_base={self.api_base!r})"

    # ---- request building and parsing ------------------------------------------------------

    def _build_body(
        self, messages: list[dict[str, Any]] | None, prompt: str | None, n: int, params: dict[str, Any]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.served_model}
        want_logprobs = bool(params.pop("logprobs", False))
        return_token_ids = params.pop("return_token_ids", True)
        for name in _CLIENT_KWARGS:
            params.pop(name, None)
        if "response_format" in params:
            from dspylite.adapters.json_adapter import response_format_body

            params["response_format"] = response_format_body(params["response_format"])
        if self.model_type == "chat":
            if messages is None:
                if prompt is None:
                    raise ValueError("LM.generate needs 'messages' (or 'prompt')")
                messages = [{"role": "user", "content": prompt}]
            body["messages"] = messages
            if want_logprobs:
                body["logprobs"] = True
                body["top_logprobs"] = 0
        else:
            if prompt is None:
                if messages is None:
                    raise ValueError("LM.generate needs 'prompt' (or 'messages' to flatten)")
                prompt = flatten_messages(messages)
            body["prompt"] = prompt
            if want_logprobs:
                body["logprobs"] = 0
        for name, value in params.items():
            if value is not None:
                body[name] = value
        if n != 1:
            body["n"] = n
        if return_token_ids:
            body["return_token_ids"] = True
        return body

    def _parse(self, data: dict[str, Any], n: int, want_logprobs: bool, url: str = "") -> list[Completion]:
        """The choices of a 200 answer; a body of another shape is an ``LMResponseError``."""
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            raise LMResponseError(f"{self._where()} answered without any choices: {_snippet(data)}")
        for choice in choices:
            if not isinstance(choice, dict):
                raise LMResponseError(
                    f"{url or self._where()} (model {self.served_model!r}) answered with a choice that is "
                    f"not a JSON object: {_snippet(choice)}",
                    body=_snippet(data),
                )
        try:
            return self._completions(data, choices, want_logprobs)
        except (AttributeError, TypeError, ValueError, KeyError) as exc:
            # Fields of the wrong type (a string message, a number for token_ids, ...).
            raise LMResponseError(
                f"{url or self._where()} (model {self.served_model!r}) answered with a malformed choice "
                f"({type(exc).__name__}: {exc}): {_snippet(data)}",
                body=_snippet(data),
            ) from exc

    def _completions(
        self, data: dict[str, Any], choices: list[dict[str, Any]], want_logprobs: bool
    ) -> list[Completion]:
        choices = sorted(choices, key=lambda c: c.get("index") or 0)
        model = data.get("model") or self.served_model
        usage = data.get("usage") or {}
        top_prompt_ids = data.get("prompt_token_ids")
        completions = []
        for choice in choices:
            token_ids = choice.get("token_ids")
            if self.model_type == "chat":
                text = (choice.get("message") or {}).get("content") or ""
                logprobs = _chat_logprobs(choice) if want_logprobs else None
            else:
                text = choice.get("text") or ""
                logprobs = _text_logprobs(choice) if want_logprobs else None
            if not isinstance(text, str):
                raise TypeError(f"the completion text is {type(text).__name__}, not a string")
            prompt_ids = choice.get("prompt_token_ids") or top_prompt_ids
            choice_usage = {}
            if usage.get("prompt_tokens") is not None:
                choice_usage["prompt_tokens"] = int(usage["prompt_tokens"])
            # With n > 1 the server reports one total; per choice we only know it from the token ids.
            if token_ids is not None:
                choice_usage["completion_tokens"] = len(token_ids)
            elif len(choices) == 1 and usage.get("completion_tokens") is not None:
                choice_usage["completion_tokens"] = int(usage["completion_tokens"])
            completions.append(
                Completion(
                    text=text,
                    model=model,
                    finish_reason=choice.get("finish_reason"),
                    token_ids=list(token_ids) if token_ids is not None else None,
                    prompt_token_ids=list(prompt_ids) if prompt_ids is not None else None,
                    logprobs=logprobs,
                    usage=choice_usage,
                )
            )
        return completions

    # ---- HTTP with retries -----------------------------------------------------------------

    def _post(self, body: dict[str, Any], breaker: CircuitBreaker) -> tuple[dict[str, Any], str, str]:
        """POST ``body``; (the answer, the URL that gave it, that endpoint's ``api_base``).

        With several endpoints a call starts at the next one in round-robin order; a retry moves on to
        the next one, and a connection error (refused, reset, timed out) moves on at once, without
        spending a retry or waiting, while the call has endpoints it has not tried.
        """
        client = self._transport.client
        bases, urls = self._live_endpoints()
        attempts = self.num_retries + 1
        last_error: Exception | None = None
        last_status: int | None = None
        last_body = ""
        position = self._transport.next_index(len(urls))
        url = urls[position]
        failovers_left = len(urls) - 1
        attempt = 0
        while attempt < attempts:
            breaker.check()  # another thread may have found the server dead while this one slept
            index = position % len(urls)
            url = urls[index]
            retry_after = None
            try:
                response = client.post(url, json=body, headers=self._headers, timeout=self.timeout)
            except httpx.TransportError as exc:
                last_error, last_status = exc, None
                reason = f"{type(exc).__name__}: {exc}"
                if failovers_left > 0:
                    failovers_left -= 1
                    position += 1
                    logger.warning(
                        "LM request to %s (model %r) failed (%s); failing over to %s",
                        url,
                        self.served_model,
                        reason,
                        urls[position % len(urls)],
                    )
                    continue
            else:
                status = response.status_code
                if status < 300:
                    try:
                        data = response.json()
                    except ValueError as exc:
                        raise LMServerError(
                            f"{url} (model {self.served_model!r}) returned a body that is not JSON: "
                            f"{_snippet(response.text)}",
                            status_code=status,
                            body=response.text,
                        ) from exc
                    if not isinstance(data, dict):
                        raise LMResponseError(
                            f"{url} (model {self.served_model!r}) returned a JSON {type(data).__name__}, "
                            f"not a completion object: {_snippet(response.text)}",
                            status_code=status,
                            body=response.text,
                        )
                    return data, url, bases[index]
                text = response.text
                message = _error_message(text)
                if status >= 500 or status in _RETRYABLE_STATUS:
                    last_error, last_status, last_body = None, status, text
                    reason = f"HTTP {status}: {message}"
                    retry_after = _retry_after_seconds(response.headers.get("retry-after"))
                else:
                    error_class = (
                        ContextWindowExceededError if _is_context_overflow(message) else LMRequestError
                    )
                    raise error_class(
                        f"{url} rejected the request for model {self.served_model!r} with HTTP {status}: "
                        f"{message}",
                        status_code=status,
                        body=text,
                    )
            attempt += 1
            position += 1
            if attempt < attempts:
                delay = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1))) * (
                    0.5 + random.random()
                )
                if retry_after is not None:
                    delay = max(delay, min(retry_after, _MAX_RETRY_AFTER_S))
                logger.warning(
                    "LM request to %s (model %r) failed (%s); retry %d/%d in %.2fs",
                    url,
                    self.served_model,
                    reason,
                    attempt,
                    self.num_retries,
                    delay,
                )
                self._usage.add(retries=1)
                time.sleep(delay)
        where = url if len(urls) == 1 else ", ".join(urls)
        if last_status is not None:
            raise LMServerError(
                f"{where} kept failing for model {self.served_model!r} after {attempts} attempt(s); "
                f"last error: HTTP {last_status}: {_error_message(last_body)}",
                status_code=last_status,
                body=last_body,
            )
        raise LMConnectionError(
            f"could not reach {where} for model {self.served_model!r} after {attempts} attempt(s): "
            f"{type(last_error).__name__}: {last_error}"
        ) from last_error

    # ---- helpers ---------------------------------------------------------------------------

    def _live_endpoints(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(api_bases, request URLs) in rotation: all of them unless the serving handle took some out."""
        rotation = self.rotation
        if rotation is None:
            return self.api_bases, self._urls
        live = [i for i, base in enumerate(self.api_bases) if not rotation.is_out(base)]
        if not live:
            raise LMConnectionError(
                f"every server for model {self.served_model!r} is out of rotation: "
                + "; ".join(f"{base}: {why}" for base, why in rotation.out.items())
            )
        return tuple(self.api_bases[i] for i in live), tuple(self._urls[i] for i in live)

    def _get_cache(self) -> LMCache:
        cache = self._cache
        if cache is None:
            cache = self._cache = shared_cache(self.cache_dir)
        return cache

    def _record(
        self,
        body: dict[str, Any],
        rollout_id: int | None,
        completions: list[Completion],
        *,
        cached: bool,
        duration: float,
        api_base: str | None,
    ) -> None:
        entry = {
            "timestamp": time.time(),
            "model": self.served_model,
            "model_type": self.model_type,
            "messages": body.get("messages"),
            "prompt": body.get("prompt"),
            "kwargs": {k: v for k, v in body.items() if k not in ("model", "messages", "prompt")},
            "rollout_id": rollout_id,
            "outputs": [c.text for c in completions],
            "usage": {
                "prompt_tokens": sum(c.usage.get("prompt_tokens", 0) for c in completions[:1]),
                "completion_tokens": sum(c.usage.get("completion_tokens", 0) for c in completions),
            },
            "cached": cached,
            "duration_s": duration,
            "api_base": api_base,
        }
        record_history(self, entry)

    def _where(self) -> str:
        return f"{', '.join(self.api_bases)} (model {self.served_model!r})"


_DSPY_ONLY_STATE_KEYS = frozenset(
    {"api_key", "callbacks", "cache_in_memory", "rollout_id", LM_CLASS_STATE_KEY}
)

# Client settings saved only when they differ from these defaults.
_CLIENT_DEFAULTS: dict[str, Any] = {
    "timeout": DEFAULT_TIMEOUT,
    "backoff_base": 0.5,
    "backoff_max": 8.0,
    "history_size": 100,
    "max_consecutive_failures": 3,
    "cache_dir": None,
}
# Keys of LM.kwargs that configure the client, never sent in a request body.
_CLIENT_KWARGS = ("api_base", "base_url", "api_key", "api_version", "model_list", "n_retries")
_CONTEXT_OVERFLOW_WORDS = ("maximum context length", "context length", "context window", "too long")


def _is_context_overflow(message: str) -> bool:
    text = message.lower()
    return any(words in text for words in _CONTEXT_OVERFLOW_WORDS)


# Settings that copy(**overrides) sets as attributes; anything else is a sampling parameter.
_INSTANCE_SETTINGS = frozenset(
    {
        "model",
        "model_type",
        "api_key",
        "cache",
        "cache_dir",
        "callbacks",
        "provider",
        "finetuning_model",
        "launch_kwargs",
        "train_kwargs",
        "use_developer_role",
        "num_retries",
        "timeout",
        "backoff_base",
        "backoff_max",
        "history_size",
        "max_consecutive_failures",
    }
)
_CHECKED_SETTINGS = frozenset(
    {"num_retries", "timeout", "temperature", "max_tokens", "max_consecutive_failures"}
)


def _check_settings(where: str, **settings: Any) -> None:
    """Reject settings a server would reject later (or that would make calls hang or never stop)."""
    for name, value in settings.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if name == "temperature":
            ok = value is None or (number and math.isfinite(value) and value >= 0)
            wanted = "a number >= 0"
        elif name == "max_tokens":
            ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)
            wanted = "an integer >= 1 (or None for the server's limit)"
        elif name == "num_retries":
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            wanted = "an integer >= 0"
        elif name == "timeout":
            ok = number and math.isfinite(value) and value > 0
            wanted = "a number of seconds > 0"
        elif name == "max_consecutive_failures":
            ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)
            wanted = "an integer >= 1 (or None to never stop calling a failing server)"
        else:  # pragma: no cover - a programming error in this module
            raise AssertionError(name)
        if not ok:
            raise ConfigError(f"{where}: {name!r} must be {wanted}, got {value!r}")


def _usage_counts(usage: Any, url: str) -> tuple[int, int]:
    """(prompt_tokens, completion_tokens) from a response's ``usage``; missing counts are 0."""
    if usage is None:
        return 0, 0
    if not isinstance(usage, dict):
        raise LMResponseError(f"{url} answered with a 'usage' that is not an object: {_snippet(usage)}")
    counts = []
    for name in ("prompt_tokens", "completion_tokens"):
        value = usage.get(name)
        if value is None:
            counts.append(0)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise LMResponseError(f"{url} answered with a non-numeric usage.{name}: {_snippet(value)}")
        counts.append(int(value))
    return counts[0], counts[1]


def flatten_messages(messages: list[dict[str, Any]]) -> str:
    """Chat messages -> one prompt for a text-completion model: their contents, blank-line separated."""
    return "\n\n".join(_content_text(m.get("content")) for m in messages)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def _normalize_api_bases(api_base: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    if api_base is None:
        api_base = os.environ.get("OPENAI_API_BASE") or os.environ.get("OPENAI_BASE_URL") or DEFAULT_API_BASE
    bases = [api_base] if isinstance(api_base, str) else list(api_base)
    if not bases:
        raise ConfigError("LM: 'api_base' is an empty list")
    for base in bases:
        if not isinstance(base, str) or not base.startswith(("http://", "https://")):
            raise ConfigError(f"LM: 'api_base' entries must be http(s) URLs, got {base!r}")
    return tuple(base.rstrip("/") for base in bases)


def _chat_logprobs(choice: dict[str, Any]) -> list[float] | None:
    content = (choice.get("logprobs") or {}).get("content")
    if content is None:
        return None
    return [float(item.get("logprob", float("nan"))) for item in content]


def _text_logprobs(choice: dict[str, Any]) -> list[float] | None:
    values = (choice.get("logprobs") or {}).get("token_logprobs")
    if values is None:
        return None
    return [float("nan") if v is None else float(v) for v in values]


def _error_message(text: str) -> str:
    """The server's own words from an OpenAI/vLLM error body, else the raw body (shortened)."""
    try:
        data = json.loads(text)
    except ValueError:
        return _snippet(text)
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if data.get("message"):
            return str(data["message"])
        if data.get("detail"):
            return str(data["detail"])
    return _snippet(text)


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _snippet(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
