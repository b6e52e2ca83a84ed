"""Typed configs: dataclasses whose fields carry help text, loaded from YAML plus key=value overrides.

    @dataclass
    class SFTConfig:
        learning_rate: float = field(default=2e-4, metadata={"help": "AdamW learning rate."})

    cfg = load_config(SFTConfig, "configs/sft.yaml", ["learning_rate=1e-4", "lora.r=8"])

Unknown keys and values of the wrong type raise ConfigError naming the key and the file. A config
class may list keys it renamed (``renamed_keys = {"k": ("labeled.k",)}``, a ClassVar): an old key
still works, moved to its new place with a logged warning naming the new key.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from dspylite.errors import ConfigError, SettingError

logger = logging.getLogger(__name__)

T = TypeVar("T")


def field_help(text: str) -> dict[str, str]:
    """A config field's metadata: its help text, which ``--help`` and ``config_keys`` show.

    ``learning_rate: float = field(default=2e-4, metadata=field_help("AdamW learning rate."))``
    """
    return {"help": text}


def load_config(
    cls: type[T],
    path: str | Path | dict[str, Any] | None = None,
    overrides: list[str] | dict[str, Any] = (),
    section: str | None = None,
) -> T:
    """``cls`` from a YAML file (or a mapping), then ``key=value`` overrides, each checked and typed.

    ``section``: read only that top-level mapping of the file (``grpo`` of configs/grpo.yaml); the
    overrides are then relative to it. Every key given, in the file or as an override, is applied
    even when it equals the default: nothing is merged by comparing against defaults.
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if isinstance(path, dict):
        data, source = copy.deepcopy(path), "config mapping"
    elif path is not None:
        data = read_yaml_mapping(path)
        source = str(Path(path))
    if section is not None:
        if path is not None and section not in data:
            raise ConfigError(f"{source} has no {section!r} section (expected `{section}:` at the top level)")
        inner = data.get(section) or {}
        if not isinstance(inner, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping, got {inner!r}")
        data, source = copy.deepcopy(inner), f"{source} (section {section})"
    if isinstance(overrides, dict):
        override_items = list(overrides.items())
    else:
        override_items = [split_override(o) for o in overrides]
    for key, value in override_items:
        for new_key in _renamed_override(cls, key):
            set_dotted(data, new_key, value)
    return from_dict(cls, data, source=source)


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The mapping at the top of a YAML config file.

    A missing file, bad YAML or a top level that is not a mapping each raise a ConfigError naming
    the file, so every loader reports a broken config the same way.
    """
    import yaml

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return loaded


def split_override(text: str) -> tuple[str, Any]:
    """``"a.b=1e-4"`` -> ``("a.b", 0.0001)``: the value is parsed as YAML, so lists and numbers work."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. learning_rate=1e-4)")
    key, raw = text.split("=", 1)
    import yaml

    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for the key ``"a.b"``, creating sections that are missing."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
    node[parts[-1]] = value


def from_dict(cls: type[T], data: dict[str, Any], *, source: str = "config", prefix: str = "") -> T:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    data = _renamed(cls, data, source=source, prefix=prefix)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    # A config class lists the keys it dropped (REMOVED_KEYS: key -> what to use instead), so a file
    # that still sets one fails naming the replacement rather than as merely unknown.
    removed = sorted(set(data) & set(getattr(cls, "REMOVED_KEYS", {})) - set(fields))
    if removed:
        raise ConfigError(
            f"{source}: {prefix}{removed[0]} is no longer a setting: {cls.REMOVED_KEYS[removed[0]]}"  # type: ignore[attr-defined]
        )
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {[prefix + k for k in unknown]} for {cls.__name__}; "
            f"known keys: {sorted(prefix + k for k in fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        field = fields[name]
        if (
            isinstance(value, dict)
            and dataclasses.is_dataclass(hints[name])
            and field.default_factory is not dataclasses.MISSING
        ):
            # A partial section keeps the rest of the field's own defaults (DemoConfig's prompt
            # section is a random search), not the section class's bare defaults. Old key names are
            # moved first, so that a renamed key given here wins over the default of its new place.
            value = _renamed(hints[name], value, source=source, prefix=f"{prefix}{name}.")
            value = _merged(to_dict(field.default_factory()), value)
        kwargs[name] = _convert(hints[name], value, f"{prefix}{name}", source)
    try:
        return cls(**kwargs)
    except SettingError as exc:
        raise ConfigError(f"{source}: {exc.within(prefix[:-1]) if prefix else exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: invalid {cls.__name__}: {exc}") from None


def _renamed(cls: type, data: dict[str, Any], *, source: str, prefix: str) -> dict[str, Any]:
    """``data`` with the old keys of ``cls.renamed_keys`` moved to their new places, each move logged
    as a warning naming the new key; an old key given together with its new one is an error."""
    renamed: dict[str, tuple[str, ...]] = getattr(cls, "renamed_keys", {})
    old_keys = [key for key in renamed if key in data]
    if not old_keys:
        return data
    data = copy.deepcopy(data)
    for old in old_keys:
        value = data.pop(old)
        for new in renamed[old]:
            if _has_dotted(data, new):
                raise ConfigError(
                    f"{source}: {prefix}{old} is the old name of {prefix}{new}, and both are given; "
                    f"keep only {prefix}{new}"
                )
            set_dotted(data, new, copy.deepcopy(value))
        logger.warning(
            "%s: %s%s is now %s; the old key works until the next release",
            source,
            prefix,
            old,
            " and ".join(f"{prefix}{new}" for new in renamed[old]),
        )
    return data


def _renamed_override(cls: type, key: str) -> list[str]:
    """The key(s) an override sets: ``key`` itself, or where its old name moved (with a warning). Done
    on the dotted key, before it is merged into the file's values, so that an old-named override
    still wins over the file's value at the new place."""
    parts = key.split(".")
    for depth, part in enumerate(parts):
        renamed: dict[str, tuple[str, ...]] = getattr(cls, "renamed_keys", {})
        if part in renamed:
            head, tail = parts[:depth], parts[depth + 1 :]
            new_keys = [".".join([*head, *new.split("."), *tail]) for new in renamed[part]]
            logger.warning(
                "override %s: %s is now %s; the old key works until the next release",
                key,
                ".".join([*head, part]),
                " and ".join(".".join([*head, *new.split(".")]) for new in renamed[part]),
            )
            return new_keys
        fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        if part not in fields:
            break
        cls = typing.get_type_hints(cls).get(part)
    return [key]


def _has_dotted(data: dict[str, Any], key: str) -> bool:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _merged(base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in given.items():
        out[key] = (
            _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def _convert(annotation: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key, source)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{source}: {key}: bad value {value!r}")
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return from_dict(annotation, value, source=source, prefix=f"{key}.")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{source}: {key} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value]
        inner = args[0] if args else Any
        return [_convert(inner, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{source}: {key} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{source}: {key} must be a finite number, got {value!r}")
        if annotation is float:
            return number
        if number != int(number):
            raise ConfigError(f"{source}: {key} must be a whole number, got {value!r}")
        return int(number)
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
        return str(value)
    if annotation is Path:
        return Path(str(value))
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


def help_table(cls: type) -> str:
    """One line per field: name, type, default and help; used by ``--help`` texts."""
    lines = []
    for f in dataclasses.fields(cls):
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else ("<factory>" if f.default_factory is not dataclasses.MISSING else "<required>")
        )
        lines.append(f"{f.name} = {default!r}: {f.metadata.get('help', '')}")
    return "\n".join(lines)


def config_keys(config: Any, prefix: str = "") -> list[tuple[str, Any, str]]:
    """Every leaf key of a config, dotted (``task.n_dev``), with its value and help text.

    ``config`` is a loaded config (what ``load_config`` gave a job: its values) or a config class (its
    defaults as a job gets them: the class built with no arguments, so a section's ``default_factory``
    shows, e.g. ``DemoConfig``'s ``task.n_train`` 2000 rather than ``TaskSettings``' 200)."""
    if isinstance(config, type):
        config = config()
    keys: list[tuple[str, Any, str]] = []
    for f in dataclasses.fields(config):
        if not f.init:
            continue
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            keys.extend(config_keys(value, f"{prefix}{f.name}."))
            continue
        keys.append((f"{prefix}{f.name}", value, f.metadata.get("help", "")))
    return keys
