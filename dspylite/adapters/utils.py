"""DSPy's ``dspy.adapters.utils`` helpers, over dspylite's value formatting and parsing."""

from __future__ import annotations

from typing import Any

from dspylite.coerce import format_value, parse_value, to_jsonable
from dspylite.signatures import type_name


def format_field_value(field_info: Any, value: Any, assume_text: bool = True) -> str:
    """A field value as prompt text (strings verbatim, structures as JSON)."""
    return format_value(value)


def serialize_for_json(value: Any) -> Any:
    return to_jsonable(value)


def get_annotation_name(annotation: Any) -> str:
    return type_name(annotation)


__all__ = ["format_field_value", "get_annotation_name", "parse_value", "serialize_for_json"]
