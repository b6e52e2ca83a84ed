"""``dspy.Type``: the base of the custom field types adapters render as content parts.

Ported from DSPy 3.3.1 (MIT License, Copyright (c) 2023 Stanford Future Data Systems); see
THIRD_PARTY_NOTICES.md. A ``Type`` is a pydantic model: this module (and so pydantic) is imported
only when a program uses one of these types, never by ``import dspylite`` or ``dspylite.Predict``.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Optional, get_args, get_origin

import pydantic

from dspylite.utils import lenient_json

if TYPE_CHECKING:
    from dspylite.signatures import Signature

from dspylite.adapters.types.markers import CUSTOM_TYPE_END_IDENTIFIER, CUSTOM_TYPE_START_IDENTIFIER


class Type(pydantic.BaseModel):
    """Base class of DSPy's custom types (``dspy.Image``, ``dspy.Tool``, ...).

    A subclass implements ``format()``, returning either a string or a list of OpenAI content parts
    (``[{"type": "image_url", ...}]``); a value formatted as parts is carried through the prompt text
    between markers and split into separate parts of the user message.
    """

    def format(self) -> list[dict[str, Any]] | str:
        raise NotImplementedError

    @classmethod
    def description(cls) -> str:
        """Description of the custom type, shown in the system message next to fields of this type."""
        return ""

    @classmethod
    def extract_custom_type_from_annotation(cls, annotation: Any) -> list[type]:
        """Every subclass of ``cls`` inside an annotation, at any depth (``list[dict[str, Tool]]`` -> Tool)."""
        try:
            if isinstance(annotation, type) and issubclass(annotation, cls):
                return [annotation]
        except TypeError:
            pass
        if get_origin(annotation) is None:
            return []
        result: list[type] = []
        for arg in get_args(annotation):
            result.extend(cls.extract_custom_type_from_annotation(arg))
        return result

    @pydantic.model_serializer()
    def serialize_model(self):
        formatted = self.format()
        if isinstance(formatted, list):
            return f"{CUSTOM_TYPE_START_IDENTIFIER}{json.dumps(formatted, ensure_ascii=False)}{CUSTOM_TYPE_END_IDENTIFIER}"
        return formatted

    @classmethod
    def adapt_to_native_lm_feature(
        cls, signature: type[Signature], field_name: str, lm: Any, lm_kwargs: dict[str, Any]
    ) -> type[Signature]:
        """Switch to the LM's native feature for this type (native reasoning, citations, ...) when the LM
        has it: update ``lm_kwargs`` in place and return the signature without the field."""
        return signature

    @classmethod
    def is_streamable(cls) -> bool:
        return False

    @classmethod
    def parse_stream_chunk(cls, chunk: Any) -> Optional[Type]:
        return None

    @classmethod
    def parse_lm_response(cls, response: str | dict[str, Any]) -> Optional[Type]:
        """The value of this type carried outside the text of an LM output (e.g. native citations)."""
        return None


def split_message_content_for_custom_types(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Split every user message whose text holds custom-type markers into OpenAI content parts."""
    for message in messages:
        if message["role"] != "user" or not isinstance(message.get("content"), str):
            continue
        parts = split_custom_type_text(message["content"])
        if parts is not None:
            message["content"] = parts
    return messages


def split_custom_type_text(content: str) -> list[dict[str, Any]] | None:
    """``content`` as text and custom-type content parts, or None when it holds no markers."""
    if CUSTOM_TYPE_START_IDENTIFIER not in content:
        return None
    pattern = rf"{CUSTOM_TYPE_START_IDENTIFIER}(.*?){CUSTOM_TYPE_END_IDENTIFIER}"
    result: list[dict[str, Any]] = []
    last_end = 0
    for match in re.finditer(pattern, content, re.DOTALL):
        start, end = match.span()
        if start > last_end:
            result.append({"type": "text", "text": content[last_end:start]})
        payload = match.group(1).strip()
        parsed = _parse_payload(payload)
        if isinstance(parsed, list) and parsed:
            result.extend(p if isinstance(p, dict) else {"type": "text", "text": str(p)} for p in parsed)
        else:
            result.append({"type": "text", "text": payload})
        last_end = end
    if last_end == 0:
        return None
    if last_end < len(content):
        result.append({"type": "text", "text": content[last_end:]})
    return result


def _parse_payload(payload: str) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        pass
    try:
        # A marker inside a JSON string (a Type inside a list or dict) is JSON-encoded twice.
        return json.loads(json.loads(f'"{payload}"'))
    except ValueError:
        pass
    value = lenient_json.loads(payload)
    return value if value != "" else None


__all__ = [
    "CUSTOM_TYPE_END_IDENTIFIER",
    "CUSTOM_TYPE_START_IDENTIFIER",
    "Type",
    "split_custom_type_text",
    "split_message_content_for_custom_types",
]
