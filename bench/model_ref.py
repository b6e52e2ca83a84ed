"""The one place the benches turn a model name into a directory (tiny, smollm2-135m-instruct, a path).

Model sources live in ``sources.models``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SMOLLM2 = "smollm2-135m-instruct"
TINY = "tiny"
# Below this many parameters a model is the quick-check tiny kind (serving.dtype's bf16 threshold too).
REAL_MODEL_PARAMS = 30_000_000


def resolve(name: str | None) -> str:
    """The model directory for ``name``: a named source, a directory, or (empty) the tiny model."""
    from sources.models import resolve_model

    return resolve_model(name or "")


def is_tiny(model_dir: str) -> bool:
    from serving.dtype import approx_parameters

    return (approx_parameters(model_dir) or 0) < REAL_MODEL_PARAMS
