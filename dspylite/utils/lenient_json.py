"""Reading the JSON a language model wrote, which is often not quite JSON.

``loads(text)`` tries, in order: strict JSON; the same inside a Markdown code fence; a Python literal
(single quotes, ``True``/``None``); JSON with trailing commas removed; and then the first balanced
``{...}`` or ``[...]`` found in the text, with the same steps. It returns ``""`` when nothing decodes,
the convention DSPy's parsers (built on ``json_repair``) rely on. Every step is a single linear scan,
and any exception a decoder raises on hostile text (deep nesting, huge integers) means "not this way".
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

_FENCE = re.compile(r"^```[\w-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_JSON_WORDS = {"true": "True", "false": "False", "null": "None"}


def loads(text: str) -> Any:
    """The value ``text`` holds, or ``""`` if no reading of it decodes."""
    if not isinstance(text, str):
        return text
    stripped = text.strip()
    value = _decode(stripped)
    if value is not _FAILED:
        return value
    span = _first_balanced(stripped)
    if span is not None and span != stripped:
        value = _decode(span)
        if value is not _FAILED:
            return value
    return ""


_FAILED = object()


def _decode(text: str) -> Any:
    if not text:
        return _FAILED
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    for attempt in (_strict, _python_literal, _without_trailing_commas, _json_words_as_python):
        value = attempt(text)
        if value is not _FAILED:
            return value
    return _FAILED


def _strict(text: str) -> Any:
    try:
        return json.loads(text)
    except Exception:  # noqa: BLE001 - see the module docstring
        return _FAILED


def _python_literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except Exception:  # noqa: BLE001
        return _FAILED


def _without_trailing_commas(text: str) -> Any:
    repaired = _TRAILING_COMMA.sub(r"\1", text)
    return _strict(repaired) if repaired != text else _FAILED


def _json_words_as_python(text: str) -> Any:
    """``{'a': true}``: single quotes (Python) mixed with JSON's true/false/null."""
    if not any(word in text for word in _JSON_WORDS):
        return _FAILED
    repaired = re.sub(r"\b(true|false|null)\b", lambda m: _JSON_WORDS[m.group(1)], text)
    return _python_literal(_TRAILING_COMMA.sub(r"\1", repaired))


def _first_balanced(text: str) -> str | None:
    """The first ``{...}`` or ``[...]`` in ``text`` whose brackets balance outside string literals."""
    start = next((i for i, ch in enumerate(text) if ch in "{["), None)
    if start is None:
        return None
    depth = 0
    quote: str | None = None
    escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if quote is not None:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


__all__ = ["loads"]
