"""Callbacks around module, LM, adapter, tool and evaluation calls, with DSPy's handler names.

Handlers come from ``configure(callbacks=[...])`` plus the instance's own ``callbacks`` attribute
(``ChatAdapter(callbacks=...)``, ``LM(..., callbacks=...)``). A handler that raises is logged and
skipped: an observer must never change what the program computes.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import uuid
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

# The call id of the innermost call running under callbacks, so a handler can nest its records.
ACTIVE_CALL_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dspylite_active_call_id", default=None
)


class BaseCallback:
    """Subclass and override the handlers you need; each ``*_start`` receives ``(call_id, instance,
    inputs)`` and each ``*_end`` ``(call_id, outputs, exception)``."""

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None: ...

    def on_module_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None: ...

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None: ...

    def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None: ...

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None: ...

    def on_adapter_format_end(
        self, call_id: str, outputs: Any, exception: BaseException | None = None
    ) -> None: ...

    def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None: ...

    def on_adapter_parse_end(
        self, call_id: str, outputs: Any, exception: BaseException | None = None
    ) -> None: ...

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None: ...

    def on_tool_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None: ...

    def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None: ...

    def on_evaluate_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None: ...


def _kind(instance: Any, fn: Callable) -> str:
    """Which handler pair a call maps to, decided by the instance's type (imports are local: cycles)."""
    from dspylite.adapters.base import Adapter
    from dspylite.adapters.utils import loaded_type
    from dspylite.evaluate.evaluate import Evaluate
    from dspylite.modules.module import Module

    if isinstance(instance, Adapter):
        return "adapter_format" if fn.__name__ == "format" else "adapter_parse"
    tool = loaded_type("Tool")  # no Tool class loaded: no tool can be calling
    if tool is not None and isinstance(instance, tool):
        return "tool"
    if isinstance(instance, Evaluate):
        return "evaluate"
    if isinstance(instance, Module):
        return "module"
    return "lm"


def active_callbacks(instance: Any) -> list[Any]:
    from dspylite import settings

    return list(settings.current().callbacks or []) + list(getattr(instance, "callbacks", None) or [])


def with_callbacks(fn: Callable) -> Callable:
    """Decorate an instance method so active callbacks see its start (arguments) and end (result)."""

    def start(instance: Any, call_id: str, callbacks: list[Any], args: tuple, kwargs: dict) -> str:
        kind = _kind(instance, fn)
        try:
            inputs = inspect.getcallargs(fn, instance, *args, **kwargs)
        except TypeError:
            inputs = {"args": args, **kwargs}
        inputs.pop("self", None)
        for callback in callbacks:
            try:
                getattr(callback, f"on_{kind}_start")(call_id=call_id, instance=instance, inputs=inputs)
            except Exception as exc:
                logger.warning("callback %r on_%s_start raised: %s", callback, kind, exc)
        return kind

    def end(
        kind: str, call_id: str, callbacks: list[Any], outputs: Any, exception: BaseException | None
    ) -> None:
        for callback in callbacks:
            try:
                getattr(callback, f"on_{kind}_end")(call_id=call_id, outputs=outputs, exception=exception)
            except Exception as exc:
                logger.warning("callback %r on_%s_end raised: %s", callback, kind, exc)

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(instance: Any, *args: Any, **kwargs: Any) -> Any:
            callbacks = active_callbacks(instance)
            if not callbacks:
                return await fn(instance, *args, **kwargs)
            call_id = uuid.uuid4().hex
            kind = start(instance, call_id, callbacks, args, kwargs)
            token = ACTIVE_CALL_ID.set(call_id)
            outputs, exception = None, None
            try:
                outputs = await fn(instance, *args, **kwargs)
                return outputs
            except BaseException as exc:
                exception = exc
                raise
            finally:
                ACTIVE_CALL_ID.reset(token)
                end(kind, call_id, callbacks, outputs, exception)

        return async_wrapper

    @functools.wraps(fn)
    def wrapper(instance: Any, *args: Any, **kwargs: Any) -> Any:
        callbacks = active_callbacks(instance)
        if not callbacks:
            return fn(instance, *args, **kwargs)
        call_id = uuid.uuid4().hex
        kind = start(instance, call_id, callbacks, args, kwargs)
        token = ACTIVE_CALL_ID.set(call_id)
        outputs, exception = None, None
        try:
            outputs = fn(instance, *args, **kwargs)
            return outputs
        except BaseException as exc:
            exception = exc
            raise
        finally:
            ACTIVE_CALL_ID.reset(token)
            end(kind, call_id, callbacks, outputs, exception)

    return wrapper


__all__ = ["ACTIVE_CALL_ID", "BaseCallback", "active_callbacks", "with_callbacks"]
