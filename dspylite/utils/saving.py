"""``dspylite.load(path)``: rebuild a whole program from a JSON state file, without pickle.

DSPy's ``dspy.load`` unpickles a directory written by ``save(path, save_program=True)``; pickles run
arbitrary code, so dspylite does not read them. Instead ``program.save("program.json")`` records the
program's class (``module:qualname``) and ``load`` imports it, builds it with no arguments and
applies the saved state. A program whose constructor needs arguments is built in code and restored
with ``program.load(path)``.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

from dspylite.errors import PickleNotSupportedError, ProgramStateError


def load(path: str | os.PathLike, allow_pickle: bool = False) -> Any:
    path = Path(path)
    if allow_pickle or path.is_dir() or path.suffix == ".pkl":
        raise PickleNotSupportedError(
            f"dspylite.load({str(path)!r}): whole-program pickles (DSPy's save_program=True directories, "
            ".pkl files, allow_pickle=True) are not loaded, since unpickling runs arbitrary code. Save the "
            "program's state as JSON with program.save('program.json') and load it with "
            "dspylite.load('program.json'), or build the program in code and call program.load(path)."
        )
    if not path.is_file():
        raise ProgramStateError(f"dspylite.load: program file not found: {path}")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProgramStateError(f"dspylite.load: {path} is not valid JSON: {exc}") from None
    class_path = (
        ((state.get("metadata") or {}).get("dspylite") or {}).get("class")
        if isinstance(state, dict)
        else None
    )
    if not class_path:
        raise ProgramStateError(
            f"dspylite.load: {path} does not record its program class (it was not written by dspylite's "
            "program.save); build the program in code and call program.load(path)"
        )
    program_class = _import_class(class_path, path)
    try:
        program = program_class()
    except TypeError as exc:
        raise ProgramStateError(
            f"dspylite.load: {class_path}() needs constructor arguments ({exc}); build it in code and call "
            f"program.load({str(path)!r})"
        ) from None
    return program.load(path)


def _import_class(class_path: str, path: Path) -> type:
    module_name, _, qualname = class_path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ProgramStateError(
            f"dspylite.load: {path} was saved from {class_path}, which cannot be imported here ({exc}); "
            "import or define the program, build it and call program.load(path)"
        ) from None
    return obj


__all__ = ["load"]
