"""Module: the base of every program (``dspy.Module``). Finds its predictors, copies itself, saves to JSON.

The structure API follows DSPy's (``dspy.primitives.base_module`` / ``module``, MIT License; see
THIRD_PARTY_NOTICES.md): ``named_parameters`` (predictors, skipping sub-modules already compiled),
``named_sub_modules``, ``deepcopy`` (falling back to copying attribute by attribute when an attribute
cannot be deep-copied), ``dump_state``/``load_state``, ``save``/``load``. Saving writes JSON only.
"""

from __future__ import annotations

import contextvars
import copy
import json
import logging
import os
import re
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dspylite.errors import PickleNotSupportedError, ProgramStateError
from dspylite.utils.callback import with_callbacks

logger = logging.getLogger(__name__)

STATE_FORMAT = "dspylite.program/1"

# The outermost module being called in this context; predictor names are relative to it.
_ACTIVE_PROGRAM: contextvars.ContextVar[Any] = contextvars.ContextVar("dspylite_active_program", default=None)
# Every module whose call is running in this context, outermost first: LM calls are recorded in
# their ``history`` too (DSPy's per-module history).
CALLER_MODULES: contextvars.ContextVar[tuple] = contextvars.ContextVar("dspylite_caller_modules", default=())
# Attributes every module has that never hold predictors (and grow: history).
_NOT_PARAMETERS = frozenset({"history", "callbacks"})


class ProgramMeta(type):
    """Every module instance gets the base attributes (callbacks, history, _compiled) before its
    ``__init__`` runs, even when a subclass forgets ``super().__init__()``."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        obj = cls.__new__(cls)
        if isinstance(obj, cls):
            Module._base_init(obj)
            cls.__init__(obj, *args, **kwargs)
        return obj


class Module(metaclass=ProgramMeta):
    """Subclass it and write ``forward``; call the instance like a function."""

    _leaf_module = False  # True for modules that never contain other modules (Predict)

    def _base_init(self) -> None:
        self._compiled = False
        self.callbacks: list = []
        self.history: list = []

    def __init__(self, callbacks: list | None = None):
        self.callbacks = list(callbacks or [])
        self._compiled = False
        self.history = []  # the LM calls made while this module ran (DSPy's per-module history)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        forward = cls.__dict__.get("forward")
        if forward is not None and not getattr(forward, "_dspylite_forward_guard", False):
            cls.forward = _warn_if_called_directly(forward)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("history", None)
        state.pop("callbacks", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("history", [])
        self.__dict__.setdefault("callbacks", [])

    # ---- calling ------------------------------------------------------------------------------
    @with_callbacks
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        callers = CALLER_MODULES.set((*CALLER_MODULES.get(), self))
        try:
            if _ACTIVE_PROGRAM.get() is not None:  # a sub-module: names were set by the outermost call
                return self.forward(*args, **kwargs)
            self._assign_predictor_names()
            token = _ACTIVE_PROGRAM.set(self)
            try:
                return _with_usage(lambda: self.forward(*args, **kwargs))
            finally:
                _ACTIVE_PROGRAM.reset(token)
        finally:
            CALLER_MODULES.reset(callers)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    @with_callbacks
    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """Await the program. A subclass's own ``async def aforward`` runs on the event loop; otherwise
        the synchronous call runs in a worker thread (with this context's settings)."""
        callers = CALLER_MODULES.set((*CALLER_MODULES.get(), self))
        try:
            if _ACTIVE_PROGRAM.get() is not None:
                return await self.aforward(*args, **kwargs)
            self._assign_predictor_names()
            token = _ACTIVE_PROGRAM.set(self)
            try:
                return await _awith_usage(lambda: self.aforward(*args, **kwargs))
            finally:
                _ACTIVE_PROGRAM.reset(token)
        finally:
            CALLER_MODULES.reset(callers)

    async def aforward(self, *args: Any, **kwargs: Any) -> Any:
        import asyncio

        return await asyncio.to_thread(self.forward, *args, **kwargs)

    def batch(
        self,
        examples: list[Any],
        num_threads: int | None = None,
        max_errors: int | None = None,
        return_failed_examples: bool = False,
        provide_traceback: bool | None = None,
        disable_progress_bar: bool = False,
        timeout: int = 120,
        straggler_limit: int = 3,
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
            timeout=timeout,
            straggler_limit=straggler_limit,
        )
        return parallel([(self, example) for example in examples])

    def inspect_history(self, n: int = 1) -> str:
        """The last ``n`` LM calls made while this module ran, as text (nothing is printed)."""
        from dspylite.utils.inspect_history import render_history

        return render_history(list(self.history)[-n:] if n > 0 else [])

    # ---- structure -----------------------------------------------------------------------------
    def named_parameters(self) -> list[tuple[str, Any]]:
        """The predictors, named by their path (``predict``, ``hop.predict1``, ``steps[0]``, ``d['k']``);
        a Predict used as the program itself is ``self``. Sub-modules marked ``_compiled`` are frozen
        and skipped, as in DSPy. Each predictor appears once, under its first path."""
        from dspylite.modules.predict import Predict

        visited: set[int] = set()
        named: list[tuple[str, Any]] = []

        def add(name: str, value: Any) -> None:
            if isinstance(value, Predict):
                if id(value) not in visited:
                    visited.add(id(value))
                    named.append((name, value))
            elif isinstance(value, Module):
                if not getattr(value, "_compiled", False):
                    for sub_name, param in value.named_parameters():
                        add(f"{name}.{sub_name}", param)

        if isinstance(self, Predict):
            return [("self", self)]  # a predictor holds no other predictors
        for name, value in self.__dict__.items():
            if name in _NOT_PARAMETERS:
                continue
            if isinstance(value, (Predict, Module)):
                add(name, value)
            elif isinstance(value, (list, tuple)):
                for idx, item in enumerate(value):
                    add(f"{name}[{idx}]", item)
            elif isinstance(value, dict):
                for key, item in value.items():
                    add(f"{name}['{key}']", item)
        return named

    def parameters(self) -> list[Any]:
        return [param for _, param in self.named_parameters()]

    def named_predictors(self) -> list[tuple[str, Any]]:
        return self.named_parameters()

    def predictors(self) -> list[Any]:
        return [p for _, p in self.named_predictors()]

    def named_sub_modules(
        self, type_: type | None = None, skip_compiled: bool = False
    ) -> Iterator[tuple[str, Any]]:
        """Every module reachable through attributes, lists, tuples and dicts, breadth first, each once:
        ``self``, ``self.sub``, ``self.items[0]``, ``self.d[key]``. ``type_`` keeps only modules of that
        type; ``skip_compiled`` does not descend into modules marked ``_compiled``."""
        type_ = type_ or Module
        queue: deque[tuple[str, Any]] = deque([("self", self)])
        seen = {id(self)}

        def add_to_queue(name: str, item: Any) -> None:
            if id(item) not in seen:
                seen.add(id(item))
                queue.append((name, item))

        while queue:
            name, item = queue.popleft()
            if isinstance(item, type_):
                yield name, item
            if isinstance(item, Module):
                if item._leaf_module or (skip_compiled and getattr(item, "_compiled", False)):
                    continue
                for sub_name, sub_item in item.__dict__.items():
                    add_to_queue(f"{name}.{sub_name}", sub_item)
            elif isinstance(item, (list, tuple)):
                for i, sub_item in enumerate(item):
                    add_to_queue(f"{name}[{i}]", sub_item)
            elif isinstance(item, dict):
                for key, sub_item in item.items():
                    add_to_queue(f"{name}[{key}]", sub_item)

    def map_named_predictors(self, fn) -> Module:
        for name, predictor in self.named_predictors():
            set_attribute_by_name(self, name, fn(predictor))
        return self

    def _assign_predictor_names(self) -> None:
        # Names go into trace records; a predictor used inside a bigger program keeps the outer name.
        for name, predictor in self.named_predictors():
            predictor._name = name

    # ---- copies ----------------------------------------------------------------------------------
    def deepcopy(self) -> Module:
        """A copy that owns its demos, signatures and sub-modules and shares LM clients and adapters.

        An attribute that cannot be deep-copied (a lock, a client) is copied shallowly, or shared."""
        memo: dict[int, Any] = {}
        for _, module in self.named_sub_modules():
            for attr in ("lm", "adapter"):
                value = vars(module).get(attr)
                if value is not None:
                    memo[id(value)] = value  # deepcopy returns memo hits as they are: shared, not copied
        try:
            return copy.deepcopy(self, memo)
        except Exception:
            pass
        new = self.__class__.__new__(self.__class__)
        for attr, value in self.__dict__.items():
            if isinstance(value, Module):
                setattr(new, attr, value.deepcopy())
                continue
            try:
                setattr(new, attr, copy.deepcopy(value, memo))
            except Exception:
                logger.warning(
                    "Failed to deep copy attribute '%s' of %s, falling back to shallow copy or reference copy.",
                    attr,
                    type(self).__name__,
                )
                try:
                    setattr(new, attr, copy.copy(value))
                except Exception:
                    setattr(new, attr, value)
        return new

    def reset_copy(self) -> Module:
        new = self.deepcopy()
        for predictor in new.parameters():
            predictor.reset()
        return new

    # ---- LM binding ---------------------------------------------------------------------------
    def set_lm(self, lm: Any) -> None:
        for predictor in self.predictors():
            predictor.lm = lm

    def get_lm(self) -> Any:
        lms = {id(p.lm): p.lm for p in self.predictors()}
        if len(lms) != 1:
            raise ValueError("Multiple LMs are being used in the module. There's no unique LM to return.")
        return next(iter(lms.values()))

    # ---- state ----------------------------------------------------------------------------------
    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        return {
            name: predictor.dump_state(json_mode=json_mode) for name, predictor in self.named_parameters()
        }

    def load_state(self, state: dict[str, Any], *, allow_unsafe_lm_state: bool = False) -> Module:
        """Apply a saved state (dspylite's or DSPy's JSON layout). All or nothing: a bad state leaves
        the program untouched and raises ProgramStateError naming the predictor at fault (a missing
        one raises ``MissingPredictorStateError``, also a ``KeyError`` as in DSPy).

        ``allow_unsafe_lm_state=True`` keeps saved endpoints and imports custom LM classes: only for
        trusted files."""
        if not isinstance(state, dict):
            raise ProgramStateError(f"a program state must be a JSON object, got {type(state).__name__}")
        predictors = dict(self.named_parameters())
        saved = {k: v for k, v in state.items() if k != "metadata"}
        missing = sorted(set(predictors) - set(saved))
        if missing:
            from dspylite.errors import MissingPredictorStateError

            raise MissingPredictorStateError(
                f"saved state does not match {type(self).__name__}: predictors in the program but not in the "
                f"file: {missing}; in the file but not in the program: {sorted(set(saved) - set(predictors))}"
            )
        unknown = sorted(set(saved) - set(predictors))
        if unknown:
            logger.warning(
                "the saved state has predictors %s that %s does not have; they are ignored",
                unknown,
                type(self).__name__,
            )
        prepared = {}
        for name, predictor in predictors.items():
            try:
                prepared[name] = predictor.parse_state(
                    saved[name], allow_unsafe_lm_state=allow_unsafe_lm_state
                )
            except ProgramStateError as exc:
                raise type(exc)(f"predictor {name!r}: {exc}") from None
            except ValueError:
                raise  # e.g. an untrusted custom LM class: the message says what to do
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

        path = Path(path)
        if save_program or modules_to_serialize or path.suffix == ".pkl":
            what = (
                "save(save_program=True)" if save_program or modules_to_serialize else f"save({path.name!r})"
            )
            raise PickleNotSupportedError(
                f"{type(self).__name__}.{what} would pickle the program, and dspylite never writes pickles "
                "(loading one runs arbitrary code). Save the state as JSON instead: "
                "program.save('program.json'); to restore, build the program in code and call "
                "program.load('program.json') (or dspylite.load('program.json') for a class that takes no "
                "constructor arguments)."
            )
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

    def load(
        self, path: str | os.PathLike, allow_pickle: bool = False, allow_unsafe_lm_state: bool = False
    ) -> Module:
        """Load a JSON state saved by dspylite or DSPy; see ``load_state`` for ``allow_unsafe_lm_state``.
        ``allow_pickle`` is accepted for DSPy code but changes nothing: a ``.pkl`` file is always refused."""
        if str(path).endswith(".pkl"):
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
            return self.load_state(state, allow_unsafe_lm_state=allow_unsafe_lm_state)
        except ProgramStateError as exc:
            raise type(exc)(f"program file {path}: {exc}") from None

    def _set_lm_usage(self, tokens: dict[str, Any], output: Any) -> None:
        from dspylite.example import Prediction

        prediction = output if isinstance(output, Prediction) else None
        if prediction is None and isinstance(output, tuple) and output and isinstance(output[0], Prediction):
            prediction = output[0]  # (prediction, trace) from optimizers that patch forward
        if prediction is not None:
            prediction.set_lm_usage(tokens)
        else:
            logger.warning(
                "Failed to set LM usage. Please return `dspy.Prediction` object from dspy.Module to enable "
                "usage tracking."
            )

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={p!r}" for n, p in self.named_predictors())
        return f"{type(self).__name__}({inner})"


BaseModule = Module

# Callers of forward() that are not a user calling it directly: the module's own call path, and a
# subclass's forward delegating to its parent's (super().forward(...)).
_FORWARD_CALLERS = frozenset({"__call__", "acall", "aforward", "forward", "<lambda>", "_with_usage"})


def _warn_if_called_directly(forward):
    """Wrap a module's ``forward``: a direct call (not through ``module(...)``) logs DSPy's warning,
    since it skips callbacks, usage tracking and history."""
    import functools

    @functools.wraps(forward)
    def guarded(self, *args: Any, **kwargs: Any) -> Any:
        caller = sys._getframe(1).f_code.co_name
        if caller not in _FORWARD_CALLERS:
            logger.warning(
                "Calling module.forward(...) on %s directly is discouraged. Please use module(...) instead.",
                type(self).__name__,
            )
        return forward(self, *args, **kwargs)

    guarded._dspylite_forward_guard = True
    return guarded


def _with_usage(call):
    """Run a top-level program call; with ``track_usage`` on, attach its LM usage to the Prediction."""
    from dspylite import settings
    from dspylite.utils.usage_tracker import track_usage

    state = settings.current()
    if not state.track_usage or state.usage_tracker is not None:
        return call()
    with track_usage() as tracker:
        output = call()
    _attach_usage(output, tracker)
    return output


async def _awith_usage(call):
    from dspylite import settings
    from dspylite.utils.usage_tracker import track_usage

    state = settings.current()
    if not state.track_usage or state.usage_tracker is not None:
        return await call()
    with track_usage() as tracker:
        output = await call()
    _attach_usage(output, tracker)
    return output


def _attach_usage(output: Any, tracker: Any) -> None:
    from dspylite.example import Prediction

    if isinstance(output, Prediction):
        output.set_lm_usage(tracker.get_total_tokens())


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


_PATH_STEP = re.compile(r"\.?([A-Za-z_]\w*)|\[(-?\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")


def set_attribute_by_name(obj: Any, name: str, value: Any) -> None:
    """Set what a predictor path names (``sub.items[0]['key'].attr``), as DSPy's magicattr does."""
    steps = []
    position = 0
    for match in _PATH_STEP.finditer(name):
        if match.start() != position:
            raise ValueError(f"cannot parse attribute path {name!r} at {name[position:]!r}")
        attr, index, key1, key2 = match.groups()
        steps.append(
            ("attr", attr) if attr else ("index", int(index)) if index is not None else ("key", key1 or key2)
        )
        position = match.end()
    if position != len(name) or not steps:
        raise ValueError(f"cannot parse attribute path {name!r}")
    target = obj
    for kind, step in steps[:-1]:
        target = getattr(target, step) if kind == "attr" else target[step]
    kind, step = steps[-1]
    if kind == "attr":
        setattr(target, step, value)
    else:
        target[step] = value
