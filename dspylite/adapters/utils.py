"""Field values to prompt text and model text back to typed values, as DSPy's adapters do them
(``dspy.adapters.utils``).

Ported from DSPy 3.3.1 (MIT License, Copyright (c) 2023 Stanford Future Data Systems); see
THIRD_PARTY_NOTICES.md. Differences: ``json_repair`` is replaced by ``dspylite.utils.lenient_json``,
and pydantic is imported only when a value or annotation needs it (plain text fields never do).
"""

from __future__ import annotations

import ast
import enum
import inspect
import json
import sys
import types
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

from dspylite.utils import lenient_json

if TYPE_CHECKING:
    from dspylite.signatures import Signature

# The custom types and the modules defining them. A type whose module was never imported cannot
# appear in an annotation or a value, so checks against it are skipped without importing pydantic.
_TYPE_MODULES = {
    "Type": "dspylite.adapters.types.base_type",
    "Reasoning": "dspylite.adapters.types.reasoning",
    "Code": "dspylite.adapters.types.code",
    "Tool": "dspylite.adapters.types.tool",
    "ToolCalls": "dspylite.adapters.types.tool",
    "ToolCallResults": "dspylite.adapters.types.tool",
    "Citations": "dspylite.adapters.types.citation",
}


def loaded_type(name: str) -> type | None:
    """The custom type class ``name`` if its module has been imported, else None."""
    module = sys.modules.get(_TYPE_MODULES[name])
    return getattr(module, name, None) if module is not None else None


def is_type(annotation: Any, name: str) -> bool:
    """``annotation`` is exactly the custom type ``name`` (``Reasoning``, ``ToolCalls``, ...)."""
    cls = loaded_type(name)
    return cls is not None and annotation is cls


def custom_types_in(annotation: Any) -> list[type]:
    """Every ``dspy.Type`` subclass inside an annotation (``list[Tool]`` -> ``[Tool]``)."""
    base = loaded_type("Type")
    return base.extract_custom_type_from_annotation(annotation) if base is not None else []


def get_dspy_field_type(field: Any) -> str | None:
    extra = getattr(field, "json_schema_extra", None) or {}
    return extra.get("__dspy_field_type")


def annotation_allows_none(annotation: Any) -> bool:
    """Whether the annotation admits None (``str | None``, ``Optional[str]``, ``None``)."""
    if annotation is None or annotation is type(None):
        return True
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        return bool(args) and annotation_allows_none(args[0])
    if origin is Union or origin is types.UnionType:
        return any(annotation_allows_none(arg) for arg in args)
    return False


def apply_output_field_defaults(signature: type[Signature], fields: dict[str, Any]) -> dict[str, Any]:
    """The parsed outputs in signature order, with optional fields the model left out filled in:
    their default (or default factory), else None when the annotation allows None."""
    completed = {}
    for name, field_info in signature.output_fields.items():
        if name in fields:
            completed[name] = fields[name]
        elif not field_info.is_required():
            completed[name] = field_info.get_default(call_default_factory=True)
        elif annotation_allows_none(field_info.annotation):
            completed[name] = None
    return completed


def _annotation_is_subclass(annotation: Any, expected_base: type | None) -> bool:
    if expected_base is None:
        return False
    try:
        return inspect.isclass(annotation) and issubclass(annotation, expected_base)
    except TypeError:
        return False


_JSON_SCALARS = (str, int, float, bool, type(None))


def serialize_for_json(value: Any) -> Any:
    """``value`` as JSON-ready data (pydantic's ``mode="json"`` dump), or ``str(value)`` if it has none."""
    try:
        return _plain_json(value)
    except _NotPlain:
        pass
    try:
        return _type_adapter(type(value)).dump_python(value, mode="json")
    except Exception:
        return str(value)


class _NotPlain(Exception):
    pass


def _plain_json(value: Any) -> Any:
    """Values made only of JSON scalars, lists, tuples and str-keyed dicts, without pydantic."""
    if isinstance(value, _JSON_SCALARS) and type(value) in _JSON_SCALARS:
        if isinstance(value, float) and value != value:  # NaN: let pydantic decide, as DSPy does
            raise _NotPlain
        return value
    if type(value) in (list, tuple):
        return [_plain_json(v) for v in value]
    if type(value) is dict and all(type(k) is str for k in value):
        return {k: _plain_json(v) for k, v in value.items()}
    raise _NotPlain


def format_field_value(field_info: Any, value: Any, assume_text: bool = True) -> str | dict:
    """A field's value as prompt text: a list given for a ``str`` field as a numbered list, a
    structure as JSON, anything else as its string form."""
    if isinstance(value, list) and getattr(field_info, "annotation", None) is str:
        string_value = _format_input_list_field_value(value)
    else:
        jsonable_value = serialize_for_json(value)
        if isinstance(jsonable_value, (dict, list)):
            string_value = json.dumps(jsonable_value, ensure_ascii=False)
        else:
            # A bare string is not quoted: quoting would change what the model sees (its length, ...).
            string_value = str(jsonable_value)
    return string_value if assume_text else {"type": "text", "text": string_value}


def _get_json_schema(field_type: Any) -> dict[str, Any]:
    def move_type_to_front(d):
        # 'type' first, recursively: easier for a model to read and follow.
        if isinstance(d, Mapping):
            return {
                k: move_type_to_front(v)
                for k, v in sorted(d.items(), key=lambda item: (item[0] != "type", item[0]))
            }
        if isinstance(d, list):
            return [move_type_to_front(item) for item in d]
        return d

    return move_type_to_front(_type_adapter(field_type).json_schema())


def translate_field_type(field_name: str, field_info: Any) -> str:
    """The placeholder of a field in the system message's structure section, with a note on the
    value the model must produce for typed outputs."""
    field_type = field_info.annotation
    if get_dspy_field_type(field_info) == "input" or field_type is str or is_type(field_type, "Reasoning"):
        desc = ""
    elif field_type is bool:
        desc = "must be True or False"
    elif field_type in (int, float):
        desc = f"must be a single {field_type.__name__} value"
    elif _annotation_is_subclass(field_type, enum.Enum):
        enum_vals = "; ".join(str(member.value) for member in field_type)
        desc = f"must be one of: {enum_vals}"
    elif get_origin(field_type) is Literal:
        # Discourage values outside the literal and answers of the form 'Literal[<value>]'.
        desc = f"must exactly match (no extra characters) one of: {'; '.join([str(x) for x in field_type.__args__])}"
    elif _annotation_is_subclass(field_type, loaded_type("Code")) and field_type.description():
        desc = ""  # Code's own description says it all; its schema would only repeat it
    else:
        desc = (
            f"must adhere to the JSON schema: {json.dumps(_get_json_schema(field_type), ensure_ascii=False)}"
        )
    desc = (" " * 8) + f"# note: the value you produce {desc}" if desc else ""
    return f"{{{field_name}}}{desc}"


def find_enum_member(enum_cls: type[enum.Enum], identifier: Any) -> enum.Enum:
    """The member whose value is ``identifier``, else whose name is (values first: an explicitly
    valued enum may use another member's name as a value)."""
    for member in enum_cls:
        if member.value == identifier:
            return member
    if identifier in enum_cls.__members__:
        return enum_cls[identifier]
    raise ValueError(f"{identifier} is not a valid name or value for the enum {enum_cls.__name__}")


def parse_value(value: Any, annotation: Any) -> Any:
    """Model text (or a decoded JSON value) as a value of ``annotation``; a mismatch raises.

    DSPy's rules first; where they fail, what small models commonly write is still read: a literal in
    another case or followed by a period (``'No'.`` for ``Literal['yes', 'no']``), a number with
    thousands separators or a trailing period (``1,000.``). Anything else still raises.
    """
    try:
        return _dspy_parse_value(value, annotation)
    except Exception:
        rescued = _lenient_candidate(value, annotation)
        if rescued is _NO_RESCUE:
            raise
        return rescued


_NO_RESCUE = object()


def _lenient_candidate(value: Any, annotation: Any) -> Any:
    if not isinstance(value, str):
        return _NO_RESCUE
    text = value.strip().strip("`").strip()
    if get_origin(annotation) is Literal:
        bare = text.rstrip(".").strip("'\"").strip()
        matches = [a for a in get_args(annotation) if str(a).lower() == bare.lower()]
        return matches[0] if len(matches) == 1 else _NO_RESCUE
    if annotation in (int, float):
        number = text.rstrip(".").replace(",", "").replace("_", "")
        try:
            return annotation(number) if annotation is float else int(number)
        except ValueError:
            return _NO_RESCUE
    return _NO_RESCUE


def _dspy_parse_value(value: Any, annotation: Any) -> Any:
    if annotation is str:
        return str(value)
    if isinstance(annotation, enum.EnumMeta):
        return find_enum_member(annotation, value)
    origin = get_origin(annotation)
    if origin is Literal:
        allowed = get_args(annotation)
        if value in allowed:
            return value
        if isinstance(value, str):
            v = value.strip()
            if v.startswith(("Literal[", "str[")) and v.endswith("]"):
                v = v[v.find("[") + 1 : -1]
            if len(v) > 1 and v[0] == v[-1] and v[0] in "\"'":
                v = v[1:-1]
            if v in allowed:
                return v
        raise ValueError(f"{value!r} is not one of {allowed!r}")
    adapter = _type_adapter(annotation)
    if not isinstance(value, str):
        return adapter.validate_python(value)
    if (
        origin in (Union, types.UnionType)
        and type(None) in get_args(annotation)
        and str in get_args(annotation)
    ):
        return adapter.validate_python(value)
    candidate = lenient_json.loads(value)  # "" when nothing decodes
    if candidate == "" and value != "":
        try:
            candidate = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            candidate = value
    import pydantic

    try:
        return adapter.validate_python(candidate)
    except pydantic.ValidationError:
        if _annotation_is_subclass(annotation, loaded_type("Type")):
            # A custom type may parse the original text itself.
            return adapter.validate_python(value)
        raise


def get_annotation_name(annotation: Any) -> str:
    """How a type is named in prompts: ``list[str]``, ``Literal['a', 'b']``, ``Person``."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is None:
        if is_type(annotation, "Reasoning"):
            return "str"  # ChainOfThought's reasoning has always been shown as a string
        if hasattr(annotation, "__name__"):
            return annotation.__name__
        return str(annotation)
    if origin is Literal:
        args_str = ", ".join(
            _quoted_string_for_literal_type_annotation(a) if isinstance(a, str) else get_annotation_name(a)
            for a in args
        )
        return f"{get_annotation_name(origin)}[{args_str}]"
    args_str = ", ".join(get_annotation_name(a) for a in args)
    return f"{get_annotation_name(origin)}[{args_str}]"


def get_field_description_string(fields: Mapping[str, Any]) -> str:
    """The numbered field list of the system message: name, type, description, type notes, constraints."""
    field_descriptions = []
    for idx, (k, v) in enumerate(fields.items()):
        field_message = f"{idx + 1}. `{k}`"
        field_message += f" ({get_annotation_name(v.annotation)})"
        extra = v.json_schema_extra
        desc = extra["desc"] if extra["desc"] != f"${{{k}}}" else ""
        for custom_type in custom_types_in(v.annotation):
            if len(custom_type.description()) > 0:
                desc += f"\n    Type description of {get_annotation_name(custom_type)}: {custom_type.description()}"
        field_message += f": {desc}"
        field_message += f"\nConstraints: {extra['constraints']}" if extra.get("constraints") else ""
        field_descriptions.append(field_message)
    return "\n".join(field_descriptions).strip()


def _format_input_list_field_value(value: list[Any]) -> str:
    if len(value) == 0:
        return "N/A"
    if len(value) == 1:
        return _format_blob(value[0])
    return "\n".join([f"[{idx + 1}] {_format_blob(txt)}" for idx, txt in enumerate(value)])


def _format_blob(blob: Any) -> str:
    blob = blob if isinstance(blob, str) else str(blob)
    if "\n" not in blob and "«" not in blob and "»" not in blob:
        return f"«{blob}»"
    modified_blob = blob.replace("\n", "\n    ")
    return f"«««\n    {modified_blob}\n»»»"


def _quoted_string_for_literal_type_annotation(s: str) -> str:
    has_single = "'" in s
    has_double = '"' in s
    if has_single and not has_double:
        return f'"{s}"'
    if has_double and not has_single:
        return f"'{s}'"
    if has_single and has_double:
        escaped = s.replace("'", "\\'")
        return f"'{escaped}'"
    return f"'{s}'"


@lru_cache(maxsize=512)
def _cached_type_adapter(annotation: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(annotation)


def _type_adapter(annotation: Any) -> Any:
    """pydantic's TypeAdapter for ``annotation`` (cached when the annotation is hashable)."""
    try:
        return _cached_type_adapter(annotation)
    except TypeError:  # unhashable annotation
        from pydantic import TypeAdapter

        return TypeAdapter(annotation)


__all__ = [
    "annotation_allows_none",
    "apply_output_field_defaults",
    "find_enum_member",
    "format_field_value",
    "get_annotation_name",
    "get_dspy_field_type",
    "get_field_description_string",
    "parse_value",
    "serialize_for_json",
    "translate_field_type",
]
