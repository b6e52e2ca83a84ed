"""Module: the base of every program. Finds its predictors, copies itself, saves to JSON."""

from __future__ import annotations

import contextvars
import copy
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dspylite.errors import PickleNotSupportedError, ProgramStateError
from dspylite.utils.callback import with_callbacks

logger = logging.getLogger(__name__)

STATE_FORMAT = "dspylite.program/1"

# The outermost module being called in this context; predictor names are relative to it.
_ACTIVE_PROGRAM: contextvars.ContextVar[Any] = contextvars.ContextVar("dspylite_active_program", default=None)


class Module:
    """Subclass it and write ``forward``; call the instance like a function."""

    _leaf_module = False  # True for modules that never contain other modules (Predict)

    @with_callbacks
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _ACTIVE_PROGRAM.get() is not None:  # a sub-module: names were set by the outermost call
            return self.forward(*args, **kwargs)
        self._assign_predictor_names()
        token = _ACTIVE_PROGRAM.set(self)
        try:
            return _with_usage(lambda: self.forward(*args, **kwargs))
        finally:
            _ACTIVE_PROGRAM.reset(token)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    # ---- async and batches (DSPy's acall / aforward / batch) -----------------------------------
    @with_callbacks
    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """Await the program. A subclass's own ``async def aforward`` runs on the event loop; otherwise
        the synchronous call runs in a worker thread (with this context's settings)."""
        if _ACTIVE_PROGRAM.get() is not None:
            return await self.aforward(*args, **kwargs)
        self._assign_predictor_names()
        token = _ACTIVE_PROGRAM.set(self)
        try:
            return await self.aforward(*args, **kwargs)
        finally:
            _ACTIVE_PROGRAM.reset(token)

    async def aforward(self, *args: Any, **kwargs: Any) -> Any:
        import asyncio

        return await asyncio.to_thread(_with_usage, lambda: self.forward(*args, **kwargs))

    def batch(
        self,
        examples: list[Any],
        num_threads: int | None = None,
        max_errors: int | None = None,
        return_failed_examples: bool = False,
        provide_traceback: bool | None = None,
        disable_progress_bar: bool = False,
    ) -> Any:
        """Run the program on every example in parallel (DSPy's ``Module.batch``); results keep order.

        Each example is an ``Example`` (its inputs are passed) or a dict of keyword arguments.
        """
        from dspylite.modules.parallel import Parallel

        parallel = Parallel(
            num_threads=num_threads,
            max_errors=max_errors,
            return_failed_examples=return_failed_examples,
            provide_traceback=provide_traceback,
            disable_progress_bar=disable_progress_bar,
        )
        return parallel([(self, example) for example in examples])

    # ---- structure -----------------------------------------------------------------------------
    def named_sub_modules(
        self, type_: type | None = None, skip_compiled: bool = False
    ) -> Iterator[tuple[str, Module]]:
        """Every Module reachable through attributes, lists, tuples and dicts (each once), named as
        DSPy names them: the root is ``self``, a child ``self.attr``, ``self.items[0]``, ``self.d[key]``.

        ``type_`` keeps only modules of that type; ``skip_compiled`` does not descend into modules
        marked ``_compiled``.
        """
        yield from (
            (name, module)
            for name, module in self._walk_sub_modules("self", skip_compiled)
            if type_ is None or isinstance(module, type_)
        )

    def _walk_sub_modules(self, root: str, skip_compiled: bool = False) -> Iterator[tuple[str, Module]]:
        seen: set[int] = set()

        def walk(obj: Any, name: str) -> Iterator[tuple[str, Module]]:
            if isinstance(obj, Module):
                if id(obj) in seen:
                    return
                seen.add(id(obj))
                yield name, obj
                if obj._leaf_module:  # a Predict holds no sub-modules; skip its demos and config
                    return
                if skip_compiled and getattr(obj, "_compiled", False):
                    return
                for attr, value in vars(obj).items():
                    if attr.startswith("_"):
                        continue
                    yield from walk(value, f"{name}.{attr}" if name else attr)
            elif isinstance(obj, (list, tuple)):
                for i, value in enumerate(obj):
                    yield from walk(value, f"{name}[{i}]")
            elif isinstance(obj, dict):
                for key, value in obj.items():
                    yield from walk(value, f"{name}['{key}']")

        yield from walk(self, root)

    def named_predictors(self) -> list[tuple[str, Any]]:
        """Predictors named by their path from this module (``predict``, ``steps[0].predict``);
        a Predict used as the program itself is ``self``."""
        from dspylite.modules.predict import Predict

        return [(name or "self", m) for name, m in self._walk_sub_modules("") if isinstance(m, Predict)]

    def predictors(self) -> list[Any]:
        return [p for _, p in self.named_predictors()]

    def named_parameters(self) -> list[tuple[str, Any]]:
        return self.named_predictors()

    def map_named_predictors(self, fn) -> Module:
        for name, predictor in self.named_predictors():
            _set_by_path(self, name, fn(predictor))
        return self

    def _assign_predictor_names(self) -> None:
        # Names go into trace records; a predictor used inside a bigger program keeps the outer name.
        for name, predictor in self.named_predictors():
            predictor._name = name

    # ---- copies ----------------------------------------------------------------------------------
    def deepcopy(self) -> Module:
        """A copy that shares LM clients and adapters but owns its demos, signatures and sub-modules."""
        memo: dict[int, Any] = {}
        for _, module in self._walk_sub_modules(""):
            for attr in ("lm", "adapter"):
                value = vars(module).get(attr)
                if value is not None:
                    memo[id(value)] = value  # deepcopy returns memo hits as they are: shared, not copied
        return copy.deepcopy(self, memo)

    def reset_copy(self) -> Module:
        new = self.deepcopy()
        for predictor in new.predictors():
            predictor.reset()
        return new

    # ---- LM binding ---------------------------------------------------------------------------
    def set_lm(self, lm: Any) -> None:
        for predictor in self.predictors():
            predictor.lm = lm

    def get_lm(self) -> Any:
        lms = {id(p.lm): p.lm for p in self.predictors()}
        if len(lms) != 1:
            raise ValueError("predictors use different LMs (or none); inspect program.predictors() instead")
        return next(iter(lms.values()))

    # ---- state ----------------------------------------------------------------------------------
    def dump_state(self) -> dict[str, Any]:
        return {name: predictor.dump_state() for name, predictor in self.named_predictors()}

    def load_state(self, state: dict[str, Any]) -> Module:
        """Apply a saved state (dspylite's or DSPy's JSON layout). All or nothing: a bad state leaves
        the program untouched and raises ProgramStateError naming the predictor at fault."""
        if not isinstance(state, dict):
            raise ProgramStateError(f"a program state must be a JSON object, got {type(state).__name__}")
        predictors = dict(self.named_predictors())
        saved = {k: v for k, v in state.items() if k != "metadata"}
        unknown = sorted(set(saved) - set(predictors))
        missing = sorted(set(predictors) - set(saved))
        if unknown or missing:
            raise ProgramStateError(
                f"saved state does not match {type(self).__name__}: predictors in the file but not in the program: "
                f"{unknown}; in the program but not in the file: {missing}"
            )
        prepared = {}
        for name, predictor in predictors.items():
            try:
                prepared[name] = predictor.parse_state(saved[name])
            except ProgramStateError as exc:
                raise ProgramStateError(f"predictor {name!r}: {exc}") from None
            except Exception as exc:
                raise ProgramStateError(f"predictor {name!r}: cannot load its saved state: {exc}") from exc
        for name, predictor in predictors.items():
            predictor.apply_state(prepared[name])
        return self

    def save(
        self,
        path: str | os.PathLike,
        save_program: bool = False,
        modules_to_serialize: list | None = None,
    ) -> Path:
        """Write the program's state (demos, instructions, LM/adapter bindings) as JSON, atomically.

        The layout is DSPy's (one entry per predictor, plus ``metadata.dependency_versions``), so
        ``dspy_program.load(path)`` reads it too. Only keys DSPy knows go in ``dependency_versions``:
        DSPy looks each one up in its own table when loading.
        """
        from dspylite.utils.io import atomic_write_text

        if save_program or modules_to_serialize:
            raise PickleNotSupportedError(
                f"{type(self).__name__}.save(save_program=True) would pickle the whole program, and dspylite "
                "never writes pickles (loading one runs arbitrary code). Save the state instead: "
                "program.save('program.json'); to restore, build the program in code and call "
                "program.load('program.json') (or dspylite.load('program.json') for a class that takes no "
                "constructor arguments)."
            )
        path = Path(path)
        state = self.dump_state()
        state["metadata"] = {
            "dependency_versions": {"python": f"{sys.version_info.major}.{sys.version_info.minor}"},
            "dspylite": {
                "format": STATE_FORMAT,
                "program": type(self).__name__,
                # Where dspylite.load finds the class to rebuild the program from this file.
                "class": f"{type(self).__module__}:{type(self).__qualname__}",
                "version": _version(),
            },
        }
        try:
            # allow_nan=False: NaN is not JSON, and DSPy's loader (orjson) rejects it.
            text = (
                json.dumps(state, indent=2, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n"
            )
        except (TypeError, ValueError) as exc:
            raise ProgramStateError(
                f"cannot save {type(self).__name__} to {path}: state is not JSON: {exc}"
            ) from exc
        atomic_write_text(path, text)
        return path

    def load(self, path: str | os.PathLike, allow_pickle: bool = False) -> Module:
        if allow_pickle or str(path).endswith(".pkl"):
            raise PickleNotSupportedError(
                f"{type(self).__name__}.load: dspylite reads JSON program state only, never pickles "
                f"({path}): loading a pickle runs arbitrary code. Re-save the program from DSPy with "
                "program.save('program.json') and load that file."
            )
        path = Path(path)
        if not path.is_file():
            raise ProgramStateError(f"program file not found: {path}")
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProgramStateError(f"program file {path} is not valid JSON: {exc}") from None
        if not isinstance(state, dict):
            raise ProgramStateError(
                f"program file {path} must hold a JSON object, got {type(state).__name__}"
            )
        try:
            return self.load_state(state)
        except ProgramStateError as exc:
            raise ProgramStateError(f"program file {path}: {exc}") from None

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={p!r}" for n, p in self.named_predictors())
        return f"{type(self).__name__}({inner})"


def _with_usage(call):
    """Run a top-level program call; with ``track_usage`` on, attach its LM usage to the Prediction."""
    from dspylite import settings
    from dspylite.example import Prediction
    from dspylite.utils.usage_tracker import track_usage

    state = settings.current()
    if not state.track_usage or state.usage_tracker is not None:
        return call()
    with track_usage() as tracker:
        output = call()
    if isinstance(output, Prediction):
        output.set_lm_usage(tracker.get_total_tokens())
    return output


def _json_default(value: Any) -> Any:
    from dspylite.coerce import to_jsonable

    converted = to_jsonable(value)
    if converted is value:
        return str(value)
    return converted


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("dspylite")
    except Exception:
        return "0+unknown"


def _set_by_path(root: Any, path: str, value: Any) -> None:
    import re

    tokens = re.findall(r"\.?([A-Za-z_]\w*)|\[(\d+)\]|\['([^']*)'\]", path)
    obj = root
    steps = [(a or None, int(b) if b else None, c or None) for a, b, c in tokens]
    for attr, idx, key in steps[:-1]:
        obj = getattr(obj, attr) if attr else obj[idx] if idx is not None else obj[key]
    attr, idx, key = steps[-1]
    if attr:
        setattr(obj, attr, value)
    elif idx is not None:
        obj[idx] = value
    else:
        obj[key] = value
