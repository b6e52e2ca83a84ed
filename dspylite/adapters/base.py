"""The adapter contract: format a signature + demos + inputs into messages, parse a completion back."""

from __future__ import annotations

import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from dspylite.adapters.conversation import history_turns, with_content_parts, without_history
from dspylite.coerce import format_value
from dspylite.errors import AdapterParseError, DemoError
from dspylite.example import Example
from dspylite.signatures import Field, Signature
from dspylite.utils.callback import with_callbacks

Messages = list[dict[str, Any]]


class Adapter(ABC):
    """Formats prompts and parses completions for one wire format.

    ``fallback`` is another adapter tried when parsing fails: opt-in, never implicit, and every use
    is counted in ``usage['fallbacks']`` so it shows up in run metrics.
    """

    name: str = "base"

    def __init__(self, fallback: Adapter | None = None, callbacks: list | None = None):
        self.fallback = fallback
        self.callbacks = list(callbacks or [])  # dspylite.utils.callback handlers for this adapter
        self._lock = threading.Lock()
        self.usage = {"calls": 0, "parse_failures": 0, "fallbacks": 0}
        # Per-signature renderings that do not depend on inputs (system prompt, schema, ...).
        self._memo: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Every adapter's own parse/format reports to callbacks, as DSPy's adapters do.
        for method in ("parse", "format"):
            if method in cls.__dict__ and not getattr(cls.__dict__[method], "__wrapped__", None):
                setattr(cls, method, with_callbacks(cls.__dict__[method]))

    def __deepcopy__(self, memo: dict[int, Any]) -> Adapter:
        # Programs are deep-copied by optimizers; copies keep formatting (and counting) through the same adapter.
        return self

    def memo(self, signature: type[Signature], key: str, build: Callable[[], Any]) -> Any:
        """``build()`` once per (signature, key); signatures are immutable, so the value never goes stale."""
        per_sig = self._memo.get(signature)
        if per_sig is None:
            per_sig = self._memo.setdefault(signature, {})
        value = per_sig.get(key)
        if value is None:
            value = per_sig[key] = build()
        return value

    # ---- hooks subclasses implement -------------------------------------------------------------
    @abstractmethod
    def format_system(self, signature: type[Signature]) -> str: ...

    @abstractmethod
    def format_user(
        self, signature: type[Signature], inputs: dict[str, Any], *, is_demo: bool = False
    ) -> str: ...

    @abstractmethod
    def format_completion(self, signature: type[Signature], outputs: dict[str, Any]) -> str: ...

    @abstractmethod
    def parse(self, signature: type[Signature], completion: str) -> dict[str, Any]: ...

    def request_kwargs(self, signature: type[Signature]) -> dict[str, Any]:
        """Extra LM request parameters this format wants (e.g. a JSON schema)."""
        return {}

    # ---- shared behaviour ---------------------------------------------------------------------------
    @with_callbacks
    def format(self, signature: type[Signature], demos: list[Any], inputs: dict[str, Any]) -> Messages:
        system = self.memo(signature, "system", lambda: self.format_system(signature))
        messages: Messages = [{"role": "system", "content": system}]
        for i, demo in enumerate(demos):
            demo_inputs, demo_outputs = split_demo(signature, demo, i)
            demo_inputs = without_history(signature, demo_inputs)
            messages.append(
                {"role": "user", "content": self.format_user(signature, demo_inputs, is_demo=True)}
            )
            messages.append({"role": "assistant", "content": self.format_completion(signature, demo_outputs)})
        inputs = dict(inputs)
        messages += history_turns(self, signature, inputs)  # pops History fields from inputs
        messages.append({"role": "user", "content": self.format_user(signature, inputs)})
        return with_content_parts(messages)

    def parse_completion(self, signature: type[Signature], completion: str) -> dict[str, Any]:
        """``parse``, with the guarantee callers rely on: any failure is an ``AdapterParseError``
        carrying the raw completion, whatever the adapter (built-in or user-written) raised."""
        try:
            return self.parse(signature, completion)
        except AdapterParseError:
            raise
        except Exception as exc:  # noqa: BLE001 - model text must never crash a program untyped
            raise self.parse_error(
                signature, completion, f"the parser raised {type(exc).__name__}: {_bounded(exc)}"
            ) from exc

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.usage[key] += n

    def typed_outputs(
        self,
        signature: type[Signature],
        completion: str,
        raw: dict[str, Any],
        missing_what: str = "output field(s)",
    ) -> dict[str, Any]:
        """Every output field of ``signature`` from ``raw`` (field -> text or decoded value), coerced to
        its annotation; a missing field or a value that does not fit is an AdapterParseError."""
        from dspylite.coerce import parse_value

        missing = [n for n in signature.output_fields if n not in raw]
        if missing:
            raise self.parse_error(signature, completion, f"missing {missing_what} {missing}", parsed=raw)
        parsed: dict[str, Any] = {}
        for name, field in signature.output_fields.items():
            try:
                parsed[name] = parse_value(raw[name], field.annotation)
            except Exception as exc:  # noqa: BLE001 - parse_value promises ValueError; be sure anyway
                raise self.parse_error(
                    signature, completion, f"field {name!r}: {exc}", parsed=parsed
                ) from None
        return parsed

    def parse_error(
        self, signature: type[Signature], completion: str, reason: str, parsed: dict | None = None
    ) -> AdapterParseError:
        return AdapterParseError(
            f"{self.name} adapter could not parse the completion for {signature.signature!r}: {reason}. "
            f"Completion was: {completion[:300]!r}",
            completion=completion,
            adapter=self.name,
            signature=signature.signature,
            parsed=parsed,
        )


def _bounded(exc: BaseException, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


def split_demo(signature: type[Signature], demo: Any, index: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A demo's input and output values; a demo with no input field at all is an error."""
    if isinstance(demo, Example):
        data = demo.toDict()
    elif isinstance(demo, dict):
        data = demo
    else:
        raise DemoError(f"demo #{index} must be an Example or dict, got {type(demo).__name__}")
    inputs = {k: data[k] for k in signature.input_fields if k in data}
    outputs = {k: data[k] for k in signature.output_fields if k in data}
    if not inputs:
        raise DemoError(
            f"demo #{index} has none of the input fields {list(signature.input_fields)} of {signature.signature!r}"
        )
    for name, value in outputs.items():
        check_demo_value(signature.output_fields[name], value, index)
    return inputs, outputs


def check_demo_value(field: Field, value: Any, index: int) -> None:
    from dspylite.coerce import parse_value

    if field.annotation is str:
        # Numbers and bools render unambiguously as text; a list or object in a text field is a mistake.
        if not isinstance(value, (str, int, float, bool)):
            raise DemoError(f"demo #{index}: field {field.name!r} should be str, got {type(value).__name__}")
        return
    try:
        parse_value(value, field.annotation)
    except ValueError as exc:
        raise DemoError(f"demo #{index}: field {field.name!r}: {exc}") from None


def field_description(field: Field) -> str:
    desc = f": {field.desc}" if field.desc else ""
    # The model must see a field's value constraints, as DSPy's prompts state them.
    constraints = f" (constraints: {field.constraints})" if field.constraints else ""
    return f"- {field.name} ({field.type_name}){desc}{constraints}"


__all__ = ["Adapter", "Messages", "split_demo", "field_description", "format_value"]
