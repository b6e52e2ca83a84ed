"""Field values as JSON-ready data and as short text (for program state, reports and feedback).

The adapters' own formatting and parsing (DSPy's rules) live in ``dspylite.adapters.utils``.
"""

from __future__ import annotations

import enum
import json
from typing import Any


def format_value(value: Any) -> str:
    """A value as text: strings verbatim; structures as JSON."""
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
    """``value`` with containers, enums, pydantic models and Examples turned into JSON-ready data."""
    return _to_jsonable(value)
