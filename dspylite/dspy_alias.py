"""Run code that says ``import dspy`` unchanged on dspylite.

``install_dspy_alias()`` makes ``dspy`` and every ``dspy.<path>`` import resolve to the same module
object as ``dspylite`` / ``dspylite.<path>``, so ``from dspy.teleprompt import BootstrapFewShot`` in
existing code gets dspylite's class. A path dspylite does not have (``dspy.retrievers``, ``dspy.streaming``)
raises ``ModuleNotFoundError`` naming it. Call it once, before the first ``import dspy``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType
from typing import Any

from dspylite.errors import ConfigError

ALIAS = "dspy"
TARGET = "dspylite"


def _target_name(fullname: str) -> str:
    return TARGET + fullname[len(ALIAS) :]


class _DspyAliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``dspy``/``dspy.*`` and loads the matching, already importable ``dspylite`` module."""

    def __init__(self) -> None:
        self._original_specs: dict[str, Any] = {}

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != ALIAS and not fullname.startswith(ALIAS + "."):
            return None
        real = _target_name(fullname)
        if importlib.util.find_spec(real) is None:
            raise ModuleNotFoundError(
                f"No module named {fullname!r}: dspylite has no {real!r} (install_dspy_alias maps "
                f"{ALIAS}.* to {TARGET}.*; see README, 'Coming from DSPy', for what is missing)",
                name=fullname,
            )
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> ModuleType:
        module = importlib.import_module(_target_name(spec.name))
        # The import system stamps the alias's spec onto the module it gets; put dspylite's back after.
        self._original_specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        original = self._original_specs.pop(module.__spec__.name, None)
        if original is not None:
            module.__spec__ = original


def install_dspy_alias() -> None:
    """Make ``import dspy`` (and ``import dspy.x.y``) give dspylite's modules. Idempotent.

    Raises ConfigError when a real ``dspy`` is already imported in this process: the two cannot share
    the name, and code holding the real one would mix both libraries' objects.
    """
    if any(isinstance(finder, _DspyAliasFinder) for finder in sys.meta_path):
        return
    loaded = sys.modules.get(ALIAS)
    if loaded is not None and loaded is not sys.modules.get(TARGET):
        raise ConfigError(
            f"install_dspy_alias: a real {ALIAS!r} is already imported ({getattr(loaded, '__file__', loaded)}); "
            "call it before anything imports dspy, or use `import dspylite as dspy`"
        )
    sys.meta_path.insert(0, _DspyAliasFinder())


def uninstall_dspy_alias() -> None:
    """Undo :func:`install_dspy_alias`: remove the finder and the ``dspy``/``dspy.*`` aliases it created."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _DspyAliasFinder)]
    for name in [n for n in sys.modules if n == ALIAS or n.startswith(ALIAS + ".")]:
        module = sys.modules[name]
        if getattr(module, "__name__", "") == _target_name(name):
            del sys.modules[name]
