"""Example (a data point) and Prediction (a module's output), with DSPy's behaviour."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class Example:
    """A dict-like record with attribute access; ``with_inputs`` marks which keys are inputs."""

    def __init__(self, base: Example | dict[str, Any] | None = None, **kwargs: Any):
        store: dict[str, Any] = {}
        input_keys: frozenset[str] | None = None
        if isinstance(base, Example):
            store.update(base._store)
            input_keys = base._input_keys
        elif isinstance(base, dict):
            store.update(base)
        elif base is not None:
            raise TypeError(f"Example() takes a dict or Example, got {type(base).__name__}")
        store.update(kwargs)
        object.__setattr__(self, "_store", store)
        object.__setattr__(self, "_input_keys", input_keys)

    # ---- mapping / attribute access ----------------------------------------------------------
    def __getattr__(self, key: str) -> Any:
        if key.startswith("__") and key.endswith("__"):
            raise AttributeError(key)
        try:
            return self._store[key]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__} has no field {key!r}; fields: {list(self._store)}"
            ) from None

    def __setattr__(self, key: str, value: Any) -> None:
        if key.startswith("_"):
            object.__setattr__(self, key, value)
        else:
            self._store[key] = value

    def __getitem__(self, key: str) -> Any:
        return self._store[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._store[key] = value

    def __delitem__(self, key: str) -> None:
        del self._store[key]

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def __len__(self) -> int:
        # As in DSPy, ``dspy_``-prefixed keys (DSPy's bookkeeping, e.g. dspy_uuid) are not fields.
        return len(self.keys())

    def __iter__(self) -> Iterator[str]:
        return iter(self._store)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Example) and self._store == other._store

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, repr(v)) for k, v in self._store.items())))

    def __repr__(self) -> str:
        # DSPy's format: "Example({'a': 1}) (input_keys={'a'})", without dspy_ bookkeeping keys.
        shown = {k: v for k, v in self._store.items() if not k.startswith("dspy_")}
        keys = set(self._input_keys) if self._input_keys is not None else None
        return f"{type(self).__name__}({shown!r}) (input_keys={keys})"

    def keys(self, include_dspy: bool = False) -> list[str]:
        return [k for k in self._store if include_dspy or not k.startswith("dspy_")]

    def values(self, include_dspy: bool = False) -> list[Any]:
        return [v for k, v in self._store.items() if include_dspy or not k.startswith("dspy_")]

    def items(self, include_dspy: bool = False) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in self._store.items() if include_dspy or not k.startswith("dspy_")]

    def get(self, key: str, default: Any = None) -> Any:
        return self._store.get(key, default)

    # ---- inputs / labels -----------------------------------------------------------------------
    def with_inputs(self, *keys: str) -> Example:
        new = self.copy()
        object.__setattr__(new, "_input_keys", frozenset(keys))
        return new

    @property
    def input_keys(self) -> frozenset[str] | None:
        return self._input_keys

    def inputs(self) -> Example:
        if self._input_keys is None:
            raise ValueError("this Example has no input keys; call .with_inputs('field', ...) first")
        return Example({k: v for k, v in self._store.items() if k in self._input_keys}).with_inputs(
            *self._input_keys
        )

    def labels(self) -> Example:
        keys = self._input_keys or frozenset()
        return Example({k: v for k, v in self._store.items() if k not in keys})

    def copy(self, **kwargs: Any) -> Example:
        new = type(self).__new__(type(self))
        object.__setattr__(new, "_store", {**self._store, **kwargs})
        object.__setattr__(new, "_input_keys", self._input_keys)
        for attr, value in self.__dict__.items():
            if attr not in ("_store", "_input_keys"):
                object.__setattr__(new, attr, value)
        return new

    def without(self, *keys: str) -> Example:
        new = self.copy()
        for k in keys:
            new._store.pop(k, None)
        return new

    def toDict(self) -> dict[str, Any]:  # noqa: N802 - DSPy's name
        """A plain dict; nested Examples and History values become dicts too, as in DSPy."""
        return {k: _plain(v) for k, v in self._store.items()}

    to_dict = toDict


def _plain(value: Any) -> Any:
    from dspylite.adapters.types.history import History

    if isinstance(value, Example):
        return value.toDict()
    if isinstance(value, History):
        return value.model_dump()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class Prediction(Example):
    """What a module returns: its output fields, plus all completions when n > 1."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "_completions", None)
        object.__setattr__(self, "_lm_usage", None)

    def get_lm_usage(self) -> dict[str, Any] | None:
        """Token usage per model of the program call that returned this (``track_usage=True``)."""
        return self._lm_usage

    def set_lm_usage(self, value: dict[str, Any] | None) -> None:
        object.__setattr__(self, "_lm_usage", value)

    @classmethod
    def from_completions(cls, outputs: list[dict[str, Any]], signature: Any = None) -> Prediction:
        pred = cls(**(outputs[0] if outputs else {}))
        object.__setattr__(pred, "_completions", Completions(outputs))
        return pred

    @property
    def completions(self) -> Completions:
        return self._completions if self._completions is not None else Completions([dict(self._store)])

    def __repr__(self) -> str:
        fields = ",\n    ".join(f"{k}={v!r}" for k, v in self._store.items())
        extra = len(self._completions) - 1 if self._completions is not None else 0
        if extra <= 0:
            return f"Prediction(\n    {fields}\n)"
        return (
            f"Prediction(\n    {fields},\n    completions=Completions(...)\n) ({extra} completions omitted)"
        )

    def __float__(self) -> float:
        if "score" in self._store:
            return float(self._store["score"])
        raise TypeError("this Prediction has no 'score' field to convert to float")


class Completions:
    """All n outputs of one call; ``completions.answer`` lists every choice's answer."""

    def __init__(self, outputs: list[dict[str, Any]]):
        self._outputs = outputs

    def __len__(self) -> int:
        return len(self._outputs)

    def __getitem__(self, i: int) -> Prediction:
        return Prediction(**self._outputs[i])

    def __iter__(self) -> Iterator[Prediction]:
        return (Prediction(**o) for o in self._outputs)

    def __getattr__(self, key: str) -> list[Any]:
        if key.startswith("_"):
            raise AttributeError(key)
        return [o.get(key) for o in self._outputs]
