"""Context-local settings: ``configure`` sets the defaults, ``context`` overrides them in a block.

Backed by a ContextVar, so a thread or asyncio task that changes settings never leaks into another.
Worker threads started by dspylite copy the caller's context (see ``dspylite.utils.parallel``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Settings:
    lm: Any = None
    adapter: Any = None
    # Extra sampling kwargs forwarded to every LM call made in this context (e.g. temperature).
    lm_kwargs: dict = field(default_factory=dict)
    # When set, each LM call records a TraceRecord here (a list owned by dspylite.trace.capture).
    trace_sink: Any = None
    # The id attached to trace records and cache keys for the current program run.
    example_id: str | None = None
    rollout_id: int | None = None
    # ---- DSPy settings that DSPy programs read or set ------------------------------------------
    # Callbacks (dspylite.utils.callback.BaseCallback) run around every module, LM and adapter call.
    callbacks: list = field(default_factory=list)
    # When True, each top-level program call returns a Prediction whose get_lm_usage() has tokens.
    track_usage: bool = False
    usage_tracker: Any = None  # the active dspylite.utils.usage_tracker.UsageTracker, if any
    # DSPy's (predictor, inputs, prediction) trace, as in DSPy a process-wide list capped at
    # max_trace_size (oldest dropped); None turns recording off. Optimizers use their own lists.
    trace: list | None = field(default_factory=list)
    max_trace_size: int = 10_000
    warn_on_type_mismatch: bool = True
    num_threads: int = 8
    max_errors: int = 10
    async_max_workers: int = 8
    disable_history: bool = False
    provide_traceback: bool = False
    max_history_size: int = 10_000
    allow_tool_async_sync_conversion: bool = False


_GLOBAL = Settings()
_CURRENT: contextvars.ContextVar[Settings | None] = contextvars.ContextVar("dspylite_settings", default=None)
# configure() changes process-wide defaults: only the thread (and, under asyncio, the task) that
# called it first may call it again, as in DSPy; everyone else uses context(...).
_OWNER_THREAD: int | None = None
_OWNER_TASK: Any = None
_OWNER_LOCK = threading.Lock()


def current() -> Settings:
    value = _CURRENT.get()
    return _GLOBAL if value is None else value


def configure(**kwargs: Any) -> None:
    """Set process-wide defaults, e.g. ``configure(lm=LM(...), adapter=ChatAdapter())``.

    Only the thread that first called ``configure`` may call it again (and under asyncio, only the
    task that first called it): a ``RuntimeError`` says to use ``context(...)`` elsewhere.
    """
    global _GLOBAL
    _check_keys(kwargs)
    _ensure_configure_allowed()
    _GLOBAL = replace(_GLOBAL, **kwargs)
    # A configure() inside a context must be visible to that context too.
    if _CURRENT.get() is not None:
        _CURRENT.set(replace(_CURRENT.get(), **kwargs))


def reset() -> None:
    """Back to the defaults, process-wide, with no owner yet (tests call it between cases)."""
    global _GLOBAL, _OWNER_THREAD, _OWNER_TASK
    _GLOBAL = Settings()
    _CURRENT.set(None)
    with _OWNER_LOCK:
        _OWNER_THREAD = None
        _OWNER_TASK = None


def _ensure_configure_allowed() -> None:
    global _OWNER_THREAD, _OWNER_TASK
    thread = threading.get_ident()
    with _OWNER_LOCK:
        if _OWNER_THREAD is None:
            _OWNER_THREAD = thread
        if _OWNER_THREAD != thread:
            raise RuntimeError(
                "dspy.settings can only be changed by the thread that initially configured it; use "
                "dspylite.context(...) in other threads."
            )
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no running event loop in this thread
            task = None
        if task is None:
            return
        if _OWNER_TASK is None:
            _OWNER_TASK = task
        elif _OWNER_TASK is not task:
            raise RuntimeError(
                "dspy.configure(...) can only be called from the same async task that called it first. Please "
                "use `dspy.context(...)` in other async tasks instead."
            )


def save(path: Any, modules_to_serialize: list | None = None, exclude_keys: list | None = None) -> None:
    """DSPy's ``dspy.settings.save``: refused, it writes a pickle (loading one runs arbitrary code)."""
    from dspylite.errors import PickleNotSupportedError

    raise PickleNotSupportedError(
        f"dspylite.settings.save({path!r}) would pickle the settings (LMs, adapters, callbacks), and dspylite "
        "never writes pickles. Configure the settings in code (dspylite.configure(lm=..., adapter=...)); "
        "a program's own state saves as JSON with program.save('program.json')."
    )


def load(path: Any, allow_pickle: bool = False) -> dict[str, Any]:
    """DSPy's ``dspy.load_settings``: refused, settings files are pickles."""
    from dspylite.errors import PickleNotSupportedError

    raise PickleNotSupportedError(
        f"dspylite.load_settings({path!r}): settings files are pickles, which dspylite never loads (loading "
        "one runs arbitrary code). Configure the settings in code with dspylite.configure(...)."
    )


@contextlib.contextmanager
def context(**kwargs: Any) -> Iterator[Settings]:
    """Override settings inside a ``with`` block, for this thread/task only."""
    _check_keys(kwargs)
    token = _CURRENT.set(replace(current(), **kwargs))
    try:
        yield current()
    finally:
        _CURRENT.reset(token)


def __getattr__(name: str) -> Any:
    # ``dspylite.settings.trace`` etc. read the current value, as ``dspy.settings.X`` does: the
    # package attribute ``dspylite.settings`` is this module once it has been imported.
    if name in Settings.__dataclass_fields__:
        return getattr(current(), name)
    raise AttributeError(f"module 'dspylite.settings' has no attribute {name!r}")


def _check_keys(kwargs: dict) -> None:
    known = set(Settings.__dataclass_fields__)
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"unknown setting(s) {unknown}; known settings: {sorted(known)}")


class _SettingsProxy:
    """``dspylite.settings.lm`` style attribute access, like ``dspy.settings``.

    ``dspylite.settings`` is this object, while ``dspylite/settings.py`` is the module; both expose
    ``current``, ``configure`` and ``context`` so code works with whichever one an import yields.
    """

    Settings = Settings

    @staticmethod
    def current() -> Settings:
        return current()

    def __getattr__(self, name: str) -> Any:
        return getattr(current(), name)

    def configure(self, **kwargs: Any) -> None:
        configure(**kwargs)

    def context(self, **kwargs: Any):
        return context(**kwargs)

    def save(
        self, path: Any, modules_to_serialize: list | None = None, exclude_keys: list | None = None
    ) -> None:
        save(path, modules_to_serialize, exclude_keys)

    @staticmethod
    def load(path: Any, allow_pickle: bool = False) -> dict[str, Any]:
        return load(path, allow_pickle)


settings = _SettingsProxy()


load_settings = load  # DSPy's top-level name, ``dspy.load_settings``
