"""Turning field values into prompt text and model text back into typed values."""

from __future__ import annotations

import ast
import enum
import json
import typing
from functools import lru_cache
from typing import Any, Literal, Union


def format_value(value: Any) -> str:
    """Render a field value for a prompt. Strings verbatim; structures as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, enum.Enum):
        return str(value.value)
    if hasattr(value, "model_dump_json"):
        return value.model_dump_json()
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(_to_jsonable(value), ensure_ascii=False)
    return str(value)


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "toDict"):  # an Example or Prediction
        return _to_jsonable(value.toDict())
    return value


def to_jsonable(value: Any) -> Any:
    return _to_jsonable(value)


@lru_cache(maxsize=256)
def _adapter(annotation: Any):
    from pydantic import TypeAdapter  # pydantic is imported only when a typed field is parsed

    return TypeAdapter(annotation)


def parse_value(text: str, annotation: Any) -> Any:
    """Coerce model text to ``annotation``. Raises ValueError with a short reason, whatever the text."""
    try:
        return _parse_value(text, annotation)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. RecursionError rendering a deeply nested JSON value
        raise ValueError(
            f"expected {_type_label(annotation)}, got a value that could not be read ({type(exc).__name__})"
        ) from None


def _parse_value(text: str, annotation: Any) -> Any:
    if annotation is str:
        # A JSON completion may hold a number where a string field is declared: keep it as text.
        return text.strip() if isinstance(text, str) else format_value(text)
    if annotation is Any:
        return text.strip() if isinstance(text, str) else text
    raw = text.strip() if isinstance(text, str) else text
    candidate = _literal_candidate(raw, annotation) if isinstance(raw, str) else raw
    try:
        return _adapter(annotation).validate_python(candidate)
    except Exception as exc:  # pydantic.ValidationError, RecursionError on deep nesting, and friends
        reason = str(exc).splitlines()
        short = reason[-1].strip() if reason else type(exc).__name__
        raise ValueError(f"expected {_type_label(annotation)}, got {_shorten(text)} ({short})") from None


def _shorten(value: Any, limit: int = 200) -> str:
    """A bounded repr: model text can be megabytes, and error messages are logged per example."""
    try:
        text = repr(value)
    except ValueError:  # e.g. an int over the 4300-digit str() limit
        return f"<{type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[:limit] + "..."


def _literal_candidate(raw: str, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is bool:
        low = raw.strip().strip(".").lower()
        if low in {"true", "yes", "1"}:
            return True
        if low in {"false", "no", "0"}:
            return False
        return raw
    if annotation in (int, float):
        return raw.strip().rstrip(".").replace(",", "") if raw else raw
    if origin is Literal:
        options = typing.get_args(annotation)
        for opt in options:
            if str(opt) == raw or str(opt) == raw.strip("'\"` ."):
                return opt
        for opt in options:  # case-insensitive match, as models often change case
            if str(opt).lower() == raw.strip("'\"` .").lower():
                return opt
        return raw
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        stripped = raw.strip("'\"` .")
        for member in annotation:
            if stripped in (str(member.value), member.name):
                return member
        return raw
    if origin is Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if type(None) in typing.get_args(annotation) and raw.lower() in {"none", "null", ""}:
            return None
        if len(args) == 1:
            return _literal_candidate(raw, args[0])
    if (
        origin in (list, dict, tuple, set)
        or annotation in (list, dict)
        or hasattr(annotation, "model_validate")
    ):
        return _structured(raw)
    return raw


def _structured(raw: str) -> Any:
    """Decode JSON, else a Python literal, else give ``raw`` back for the validator to reject.

    Model text can make both decoders raise almost anything (RecursionError on deep nesting,
    ValueError on ints over 4300 digits, TypeError on ``{[1]: 2}``): any failure here only means
    "not decodable", so every exception falls through.
    """
    text = raw
    if text.startswith("```"):
        text = text.strip("`")
        text = text.split("\n", 1)[1] if "\n" in text else text
    try:
        return json.loads(text)
    except Exception:  # noqa: BLE001 - see the docstring
        pass
    try:
        return ast.literal_eval(text)
    except Exception:  # noqa: BLE001 - see the docstring
        return raw


def _type_label(annotation: Any) -> str:
    from dspylite.signatures import type_name

    return type_name(annotation)


def json_schema(annotation: Any) -> dict[str, Any]:
    return _adapter(annotation).json_schema()
