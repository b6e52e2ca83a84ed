"""Signatures: typed input/output fields plus instructions, as immutable class values.

Two forms, as in DSPy::

    class QA(Signature):
        \"\"\"Answer the question from the context.\"\"\"
        context: list[str] = InputField(desc="facts")
        question: str = InputField()
        answer: int = OutputField()

    QA2 = Signature("context: list[str], question -> answer: int", "Answer the question.")

Every editing method (``with_instructions``, ``append``, ``prepend``, ``insert``, ``delete``,
``with_updated_fields``) returns a new class; a signature is never mutated.
"""

from __future__ import annotations

import ast
import keyword
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Literal, Optional, Union

from dspylite.errors import InputError, SignatureError, UndeclaredFieldError

_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Undefined:
    """The "no default" marker of a field (pydantic's ``PydanticUndefined`` in DSPy)."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __reduce__(self):
        return (_Undefined, ())


UNDEFINED = _Undefined()
# The key DSPy's fields carry in ``json_schema_extra`` when the signature gave the field no type.
IS_TYPE_UNDEFINED = "is_type_undefined"


@dataclass(frozen=True)
class Field:
    """One named field of a signature.

    ``default`` / ``default_factory`` make a field optional, as pydantic's options do on DSPy's
    fields: a missing input takes the default, and so does an output the model left out.
    ``annotated`` is False when the signature gave no type (the field is then ``str``, and callers
    are not warned about the type of the value they pass).
    """

    name: str
    kind: Literal["input", "output"]
    annotation: Any = str
    desc: str = ""
    prefix: str = ""
    constraints: str = ""
    default: Any = UNDEFINED
    default_factory: Any = None
    annotated: bool = True

    @property
    def type_name(self) -> str:
        return type_name(self.annotation)

    def is_required(self) -> bool:
        return self.default is UNDEFINED and self.default_factory is None

    def get_default(self, call_default_factory: bool = False) -> Any:
        if self.default_factory is not None:
            return self.default_factory() if call_default_factory else None
        return None if self.default is UNDEFINED else self.default

    @property
    def description(self) -> str:
        return self.desc

    @property
    def json_schema_extra(self) -> dict[str, Any]:
        """The field's metadata under the keys DSPy's pydantic ``FieldInfo.json_schema_extra`` uses.

        DSPy code reads ``sig.fields[name].json_schema_extra["prefix"]`` / ``["desc"]``; a field with no
        description reads ``"${name}"`` there, as in DSPy. A fresh dict each time: fields are immutable.
        """
        extra = {
            "__dspy_field_type": self.kind,
            "desc": self.desc or f"${{{self.name}}}",
            "prefix": self.prefix,
        }
        if self.constraints:
            extra["constraints"] = self.constraints
        if not self.annotated:
            extra[IS_TYPE_UNDEFINED] = True
        return extra


@dataclass(frozen=True)
class _FieldSpec:
    """What ``InputField()`` / ``OutputField()`` return inside a class body."""

    kind: Literal["input", "output"]
    desc: str = ""
    prefix: str = ""
    annotation: Any = None
    constraints: str = ""
    default: Any = UNDEFINED
    default_factory: Any = None

    @property
    def json_schema_extra(self) -> dict[str, Any]:
        """As a DSPy ``FieldInfo`` made by ``InputField()``/``OutputField()`` carries it, before it is named."""
        extra = {"__dspy_field_type": self.kind, "desc": self.desc, "prefix": self.prefix}
        if self.constraints:
            extra["constraints"] = self.constraints
        return extra

    def field(self, name: str, annotation: Any = str, annotated: bool = True) -> Field:
        return Field(
            name,
            self.kind,
            annotation,
            self.desc,
            self.prefix or _label(name),
            self.constraints,
            self.default,
            self.default_factory,
            annotated,
        )


# pydantic's value constraints and the words DSPy uses for them in a field's description.
_CONSTRAINT_WORDS = {
    "gt": "greater than: ",
    "ge": "greater than or equal to: ",
    "lt": "less than: ",
    "le": "less than or equal to: ",
    "min_length": "minimum length: ",
    "max_length": "maximum length: ",
    "multiple_of": "a multiple of the given number: ",
    "allow_inf_nan": "allow 'inf', '-inf', 'nan' values: ",
}


def _constraints_text(kwargs: dict[str, Any]) -> str:
    """``min_length=5, max_length=10`` -> ``"minimum length: 5, maximum length: 10"`` (DSPy's wording)."""
    return ", ".join(f"{words}{kwargs[key]}" for key, words in _CONSTRAINT_WORDS.items() if key in kwargs)


def InputField(desc: str = "", *, prefix: str = "", **kwargs: Any) -> Any:  # noqa: N802 - DSPy's name
    """A signature's input field. As DSPy's, it takes pydantic's options: ``description=`` (for
    ``desc``), ``default=`` / ``default_factory=`` and the value constraints (``ge=``, ``max_length=``, ...),
    which the prompt states."""
    return _spec("input", desc, prefix, kwargs)


def OutputField(desc: str = "", *, prefix: str = "", **kwargs: Any) -> Any:  # noqa: N802 - DSPy's name
    return _spec("output", desc, prefix, kwargs)


def _spec(kind: Literal["input", "output"], desc: str, prefix: str, kwargs: dict[str, Any]) -> _FieldSpec:
    return _FieldSpec(
        kind,
        desc or kwargs.get("description") or "",
        prefix or "",
        constraints=_constraints_text(kwargs),
        default=kwargs.get("default", UNDEFINED),
        default_factory=kwargs.get("default_factory"),
    )


def infer_prefix(name: str) -> str:
    """DSPy's label for a field name: ``some_field`` -> ``Some Field``, ``camelCase`` -> ``Camel Case``,
    ``question2`` -> ``Question 2``; all-caps words (acronyms) stay as they are."""
    text = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    text = re.sub(r"([a-zA-Z])(\d)", r"\1_\2", text)
    text = re.sub(r"(\d)([a-zA-Z])", r"\1_\2", text)
    return " ".join(w if w.isupper() else w.capitalize() for w in text.split("_"))


def _label(name: str) -> str:
    """The prefix DSPy stores in saved programs: the inferred label plus a colon."""
    return infer_prefix(name) + ":"


def type_name(annotation: Any) -> str:
    if annotation is Ellipsis:
        return "..."
    if annotation is None or annotation is type(None):
        return "None"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return "Literal[" + ", ".join(repr(a) for a in args) + "]"
    # ``int | str`` (types.UnionType) names the same type as ``Union[int, str]``: one spelling, so
    # prompts and ``Signature.equals`` treat the two as DSPy does.
    if origin is Union or origin is types.UnionType:
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1 and len(args) == 2:
            return f"Optional[{type_name(non_none[0])}]"
        return "Union[" + ", ".join(type_name(a) for a in args) + "]"
    name = getattr(origin, "__name__", str(origin))
    if args:
        return f"{name}[{', '.join(type_name(a) for a in args)}]"
    return name


def _set_fields(cls: type, fields: dict[str, Field]) -> None:
    inputs = {k: f for k, f in fields.items() if f.kind == "input"}
    outputs = {k: f for k, f in fields.items() if f.kind == "output"}
    type.__setattr__(cls, "_fields", fields)
    type.__setattr__(cls, "_inputs", inputs)
    type.__setattr__(cls, "_outputs", outputs)
    type.__setattr__(cls, "_spec", ", ".join(inputs) + " -> " + ", ".join(outputs))


class SignatureMeta(type):
    """Builds the field table of a Signature class and keeps it read-only."""

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kw: Any):
        fields: dict[str, Field] = {}
        for base in reversed(bases):
            fields.update(getattr(base, "_fields", {}) or {})
        annotations = namespace.get("__annotations__", {})
        module = namespace.get("__module__")
        for attr, value in list(namespace.items()):
            if isinstance(value, _FieldSpec):
                ann = annotations.get(attr, str)
                if isinstance(ann, str):  # `from __future__ import annotations`
                    ann = _resolve_annotation(ann, module, attr)
                fields[attr] = value.field(attr, ann, annotated=attr in annotations)
                del namespace[attr]
        for attr in annotations:
            if attr not in fields and not attr.startswith("_"):
                raise UndeclaredFieldError(
                    f"signature {name}: field {attr!r} has a type annotation but no InputField()/OutputField()"
                )
        instructions = namespace.get("__doc__")
        cls = super().__new__(mcs, name, bases, namespace)
        inputs = {k: f for k, f in fields.items() if f.kind == "input"}
        outputs = {k: f for k, f in fields.items() if f.kind == "output"}
        _set_fields(cls, {**inputs, **outputs})
        if instructions is None:  # a subclass keeps its parent's own instructions, not a generated default
            parent = next((b for b in bases if isinstance(b, SignatureMeta) and b._fields), None)
            if parent is not None and parent._instructions != _default_instructions(parent._fields):
                instructions = parent._instructions
        type.__setattr__(cls, "_instructions", (instructions or "").strip() or _default_instructions(fields))
        return cls

    def __call__(cls, *args: Any, **kwargs: Any):
        # Signature("a -> b", "instructions") builds a new signature class, like DSPy.
        if args and isinstance(args[0], (str, dict)):
            return make_signature(*args, **kwargs)
        if args:
            raise TypeError(
                f"{cls.__name__}(...) takes its field values by keyword, got {len(args)} positional"
            )
        return _instance(cls, kwargs)

    def __setattr__(cls, name: str, value: Any) -> None:
        # Private and dunder names are the class's own machinery (set when a pickled class is rebuilt);
        # the signature itself (fields, instructions) is immutable.
        if name.startswith("_"):
            type.__setattr__(cls, name, value)
            return
        raise AttributeError(f"signatures are immutable; use {cls.__name__}.with_updated_fields/... instead")

    def __repr__(cls) -> str:
        return f"Signature({cls.signature!r}, instructions={cls.instructions!r})"

    @property
    def fields(cls) -> dict[str, Field]:
        return dict(cls._fields)

    @property
    def input_fields(cls) -> Mapping[str, Field]:
        """A read-only view (predictors consult it on every call)."""
        return MappingProxyType(cls._inputs)

    @property
    def output_fields(cls) -> Mapping[str, Field]:
        return MappingProxyType(cls._outputs)

    @property
    def instructions(cls) -> str:
        return cls._instructions or _default_instructions(cls._fields)

    @property
    def signature(cls) -> str:
        return cls._spec


class Signature(metaclass=SignatureMeta):
    """Base class of every signature. See the module docstring."""

    # ---- editing: each returns a new signature class -------------------------------------------
    @classmethod
    def with_instructions(cls, instructions: str) -> type[Signature]:
        return _build(cls.__name__, list(cls._fields.values()), instructions)

    @classmethod
    def append_instructions(cls, instructions: str) -> type[Signature]:
        """A new signature whose instructions are these ones, a blank line, then ``instructions``."""
        return cls.with_instructions(f"{cls.instructions}\n\n{instructions}")

    @classmethod
    def with_updated_fields(cls, name: str, type_: Any = None, **updates: Any) -> type[Signature]:
        if name not in cls._fields:
            raise SignatureError(f"{cls.__name__} has no field {name!r}; fields: {list(cls._fields)}")
        if type_ is not None:
            updates["annotation"] = type_
            updates["annotated"] = True
        fields = [replace(f, **updates) if f.name == name else f for f in cls._fields.values()]
        return _build(cls.__name__, fields, cls._instructions)

    @classmethod
    def insert(cls, index: int, name: str, field: Any, type_: Any = None) -> type[Signature]:
        if isinstance(field, Field):
            new = replace(field, name=name, annotation=type_ or field.annotation)
        else:
            spec = _as_spec(field, name)
            annotation = type_ if type_ is not None else spec.annotation
            new = spec.field(
                name, annotation if annotation is not None else str, annotated=annotation is not None
            )
        group = [f for f in cls._fields.values() if f.kind == new.kind]
        other = [f for f in cls._fields.values() if f.kind != new.kind]
        if index < 0:
            index = len(group) + 1 + index
        group.insert(max(0, min(index, len(group))), new)
        ordered = group + other if new.kind == "input" else other + group
        return _build(cls.__name__, ordered, cls._instructions)

    @classmethod
    def append(cls, name: str, field: Any, type_: Any = None) -> type[Signature]:
        return cls.insert(-1, name, field, type_)

    @classmethod
    def prepend(cls, name: str, field: Any, type_: Any = None) -> type[Signature]:
        return cls.insert(0, name, field, type_)

    @classmethod
    def delete(cls, name: str) -> type[Signature]:
        if name not in cls._fields:
            raise SignatureError(f"{cls.__name__} has no field {name!r}; fields: {list(cls._fields)}")
        return _build(cls.__name__, [f for f in cls._fields.values() if f.name != name], cls._instructions)

    @classmethod
    def equals(cls, other: Any) -> bool:
        return (
            isinstance(other, SignatureMeta)
            and cls.instructions == other.instructions
            and [(f.name, f.kind, f.type_name, f.desc) for f in cls._fields.values()]
            == [(f.name, f.kind, f.type_name, f.desc) for f in other._fields.values()]
        )

    # ---- DSPy-compatible state --------------------------------------------------------------------
    @classmethod
    def dump_state(cls) -> dict[str, Any]:
        return {
            "instructions": cls.instructions,
            # DSPy writes "${name}" for a field with no description; so do we, for identical files.
            "fields": [
                {"prefix": f.prefix, "description": f.desc or f"${{{f.name}}}"} for f in cls._fields.values()
            ],
        }

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> type[Signature]:
        """Apply saved instructions and field labels (positional, as DSPy stores them)."""
        fields = list(cls._fields.values())
        saved = state.get("fields", [])
        if saved and len(saved) != len(fields):
            raise SignatureError(
                f"saved signature has {len(saved)} fields but {cls.signature!r} has {len(fields)}"
            )
        updated = [
            replace(f, prefix=s.get("prefix", f.prefix), desc=_desc_from_state(s.get("description"), f))
            for f, s in zip(fields, saved, strict=False)
        ] or fields
        return _build(cls.__name__, updated, state.get("instructions") or cls._instructions)


def _instance(cls: SignatureMeta, values: dict[str, Any]) -> Signature:
    """``QA(question=..., answer=...)``: one record of the signature's fields, as DSPy's (pydantic)
    signatures allow. Every field is required and no other name is accepted, as pydantic checks."""
    missing = [name for name in cls._fields if name not in values]
    unknown = [name for name in values if name not in cls._fields]
    if missing or unknown:
        raise InputError(f"{cls.__name__}(...): missing fields {missing}, unknown fields {unknown}")
    record = type.__call__(cls)
    record.__dict__.update(values)
    return record


def _default_instructions(fields: dict[str, Field]) -> str | None:
    """DSPy's default, fixed when the signature is created (editing fields later keeps it, as in DSPy)."""
    if not fields:
        return None
    ins = ", ".join(f"`{k}`" for k, f in fields.items() if f.kind == "input")
    outs = ", ".join(f"`{k}`" for k, f in fields.items() if f.kind == "output")
    return f"Given the fields {ins}, produce the fields {outs}."


def _desc_from_state(desc: str | None, field: Field) -> str:
    # DSPy stores "${name}" for a field with no description: the loaded field has none either.
    if desc is None:
        return field.desc
    return "" if desc == f"${{{field.name}}}" else desc


def _as_spec(field: Any, name: str) -> _FieldSpec:
    if isinstance(field, _FieldSpec):
        return field
    raise SignatureError(
        f"field {name!r} must be InputField(...) or OutputField(...), got {type(field).__name__}"
    )


def _build(name: str, fields: list[Field], instructions: str | None) -> type[Signature]:
    seen: set[str] = set()
    for f in fields:
        _check_name(f.name)
        if f.name in seen:
            raise SignatureError(
                f"duplicate field name {f.name!r} in {name}: input and output fields must have distinct names"
            )
        seen.add(f.name)
    namespace: dict[str, Any] = {"__doc__": instructions, "__module__": __name__}
    cls = SignatureMeta.__new__(SignatureMeta, name, (Signature,), namespace)
    _set_fields(
        cls,
        {f.name: f for f in fields if f.kind == "input"} | {f.name: f for f in fields if f.kind == "output"},
    )
    type.__setattr__(cls, "_instructions", (instructions or "").strip() or _default_instructions(cls._fields))
    return cls


def _check_name(name: str) -> None:
    if not _FIELD_NAME.match(name) or keyword.iskeyword(name):
        raise SignatureError(f"invalid field name {name!r}: use a Python identifier")


# ---- the string form ----------------------------------------------------------------------------

_TYPE_NAMES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "list": list,
    "dict": dict,
    "tuple": tuple,
    "List": list,
    "Dict": dict,
    "Tuple": tuple,
    "Optional": Optional,
    "Union": Union,
    "Literal": Literal,
    "Any": Any,
    "None": type(None),
}


def make_signature(
    spec: str | dict[str, Any],
    instructions: str | None = None,
    signature_name: str = "StringSignature",
    custom_types: dict[str, Any] | None = None,
) -> type[Signature]:
    """Build a signature from ``"a: int, b -> c: list[str]"`` or from ``{name: (type, InputField())}``."""
    if isinstance(spec, dict):
        fields = []
        for name, value in spec.items():
            if isinstance(value, Field):  # another signature's field, as DSPy code passes FieldInfo
                fields.append(replace(value, name=name))
                continue
            ann, fspec = value if isinstance(value, tuple) else (str, value)
            if isinstance(fspec, Field):
                fields.append(replace(fspec, name=name, annotation=ann, annotated=True))
                continue
            fields.append(_as_spec(fspec, name).field(name, ann, annotated=isinstance(value, tuple)))
        return _build(signature_name, fields, instructions)
    if not isinstance(spec, str) or spec.count("->") != 1:
        raise SignatureError(f"signature string must contain exactly one '->': {spec!r}")
    left, right = spec.split("->")
    names = _TypeNames({**_TYPE_NAMES, **(custom_types or {})})
    inputs = _parse_side(left, "input", names, spec)
    outputs = _parse_side(right, "output", names, spec)
    if not outputs:
        raise SignatureError(f"signature {spec!r} has no output fields after '->'")
    try:
        return _build(signature_name, inputs + outputs, instructions)
    except SignatureError as exc:
        raise SignatureError(f"{exc} (in signature {spec!r})") from None


class _TypeNames(Mapping):
    """Type names a string signature may use: the built-in table and ``custom_types``, then (as in
    DSPy) names visible where the signature was written: the first frame outside dspylite that
    defines the name, in its locals or globals."""

    def __init__(self, known: dict[str, Any]):
        self._known = known

    def __getitem__(self, name: str) -> Any:
        if name in self._known:
            return self._known[name]
        import sys

        frame = sys._getframe(1)
        while frame is not None:
            module = frame.f_globals.get("__name__", "")
            if module != "dspylite" and not module.startswith("dspylite."):
                for scope in (frame.f_locals, frame.f_globals):
                    if name in scope:
                        return scope[name]
            frame = frame.f_back
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        try:
            self[name]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def __iter__(self):
        return iter(self._known)

    def __len__(self) -> int:
        return len(self._known)


def _parse_side(text: str, kind: Literal["input", "output"], names: dict[str, Any], spec: str) -> list[Field]:
    text = text.strip()
    if not text:
        return []
    fields = []
    for part in _split_top_level(text):
        name, _, type_text = part.partition(":")
        name = name.strip()
        if not name:
            raise SignatureError(f"empty field name in signature {spec!r}")
        try:
            _check_name(name)
        except SignatureError as exc:
            raise SignatureError(f"{exc} (in signature {spec!r})") from None
        typed = bool(type_text.strip())
        ann = _eval_type(type_text.strip(), names, spec, name) if typed else str
        fields.append(Field(name, kind, ann, "", _label(name), annotated=typed))
    return fields


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _eval_type(text: str, names: dict[str, Any], spec: str, field: str = "?") -> Any:
    """Evaluate a type expression with a whitelist of names (no arbitrary code)."""
    where = f"field {field!r} of signature {spec!r}"
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise SignatureError(f"cannot parse type {text!r} of {where}") from None

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise SignatureError(
                    f"unknown type {node.id!r} in signature {spec!r}; pass custom_types={{'{node.id}': ...}}"
                )
            return names[node.id]
        if isinstance(node, ast.Attribute):
            base = ev(node.value)
            if node.attr.startswith("_") or not hasattr(base, node.attr):
                raise SignatureError(f"type {text!r} of {where}: {node.attr!r} is not a type of {base!r}")
            return getattr(base, node.attr)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Tuple):
            return tuple(ev(e) for e in node.elts)
        if isinstance(node, ast.Subscript):
            base = ev(node.value)
            arg = ev(node.slice)
            try:
                return base[arg]
            except (TypeError, ValueError, AttributeError) as exc:  # int[str], Optional[int, str], ...
                raise SignatureError(f"invalid type {text!r} of {where}: {exc}") from None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return Union[ev(node.left), ev(node.right)]  # noqa: UP007
        raise SignatureError(f"unsupported type expression {text!r} in signature {spec!r}")

    annotation = ev(tree.body)
    if not _is_type(annotation):
        raise SignatureError(f"{text!r} ({where}) is not a type")
    return annotation


def _is_type(annotation: Any) -> bool:
    """A class, ``Any``/``None``, or a typing construct whose arguments are types (Literal's are values)."""
    if (
        annotation is Any
        or annotation is None
        or isinstance(annotation, type)
        and not typing.get_args(annotation)
    ):
        return True
    origin = typing.get_origin(annotation)
    if origin is None:
        return False
    if origin is Literal:
        return True
    return all(a is Ellipsis or _is_type(a) for a in typing.get_args(annotation))


def _resolve_annotation(text: str, module: str | None, attr: str) -> Any:
    import sys

    namespace = dict(_TYPE_NAMES)
    if module and module in sys.modules:
        namespace.update(vars(sys.modules[module]))
    try:
        return eval(text, namespace)  # noqa: S307 - a class body's own annotation, same trust as the class
    except Exception as exc:
        raise SignatureError(f"cannot resolve type annotation {text!r} of field {attr!r}: {exc}") from None


def ensure_signature(signature: str | type[Signature], instructions: str | None = None) -> type[Signature]:
    if isinstance(signature, str):
        return make_signature(signature, instructions)
    if isinstance(signature, SignatureMeta):
        return signature.with_instructions(instructions) if instructions else signature
    raise SignatureError(f"expected a signature string or Signature class, got {type(signature).__name__}")
