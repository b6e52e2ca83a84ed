"""Binding a program's predictors to a served adapter (DESIGN.md, invariant 3).

A binding is nothing more than the predictor's ``lm`` being a copy of a base LM whose ``model`` is
the adapter's served name: every request the predictor makes then names the adapter, and the
program's JSON state records that model name (``Predict`` saves ``lm.dump_state()``), so the
binding survives save/load.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dspylite import settings as _settings
from dspylite.errors import BindingError, NoLMConfiguredError


def bind(program: Any, adapter_name: str, *, lm: Any = None, predictors: Iterable[str] | None = None) -> Any:
    """Point the selected predictors (all by default) at ``adapter_name``; returns ``program``.

    The program is changed in place (use ``program.deepcopy()`` first to keep the original). Each
    predictor gets ``base_lm.copy(model=adapter_name)``, where ``base_lm`` is ``lm`` when given,
    else the predictor's own LM, else the LM from ``dspylite.configure``. So endpoint, API key,
    sampling settings and cache policy stay those of the base LM.
    """
    if not isinstance(adapter_name, str) or not adapter_name:
        raise BindingError(f"adapter_name must be a non-empty string, got {adapter_name!r}")
    bound = []
    for name, predictor in _select(program, predictors):
        base = lm if lm is not None else (getattr(predictor, "lm", None) or _settings.current().lm)
        if base is None:
            raise NoLMConfiguredError(
                f"cannot bind predictor {name!r} to adapter {adapter_name!r}: it has no LM, none was "
                "passed as lm=..., and dspylite.configure(lm=...) set none"
            )
        bound.append((predictor, base.copy(model=adapter_name)))
    for predictor, adapter_lm in bound:  # all or nothing: no half-bound program on error
        predictor.lm = adapter_lm
    return program


def unbind(program: Any, *, predictors: Iterable[str] | None = None, lm: Any = None) -> Any:
    """Undo ``bind``: the selected predictors get ``lm`` (default None: the configured LM again)."""
    for _name, predictor in _select(program, predictors):
        predictor.lm = lm
    return program


def bindings(program: Any) -> dict[str, str | None]:
    """``{predictor_name: model}`` for every predictor; None where it uses the configured LM."""
    return {
        name: (getattr(predictor.lm, "model", None) if getattr(predictor, "lm", None) is not None else None)
        for name, predictor in program.named_predictors()
    }


def _select(program: Any, names: Iterable[str] | None) -> list[tuple[str, Any]]:
    if isinstance(names, str):  # a single name is a common slip; treat it as one name, not letters
        names = [names]
    named = list(program.named_predictors())
    if names is None:
        if not named:
            raise BindingError(f"{type(program).__name__} has no predictors to bind")
        return named
    wanted = list(names)
    by_name = dict(named)
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise BindingError(f"unknown predictor name(s) {unknown}; the program has {sorted(by_name)}")
    return [(n, by_name[n]) for n in wanted]
