"""Models built here once and cached under ``$DSPYLITE_HOME/models``: where, validity, atomic build.

A build writes into a temporary sibling directory and renames it into place only when complete, and
the marker file (written last by the builder) carries the cache key; so an interrupted build never
leaves a directory that looks like a valid model, and a changed recipe builds a new one. Concurrent
callers asking for the same directory wait on a file lock for one build instead of racing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dspylite.errors import TrainingError

logger = logging.getLogger(__name__)


def default_models_root() -> Path:
    home = os.environ.get("DSPYLITE_HOME")
    base = Path(home) if home else Path.home() / ".cache" / "dspylite"
    return base / "models"


def read_json_marker(model_dir: Path, marker_file: str) -> dict[str, Any] | None:
    try:
        return json.loads((Path(model_dir) / marker_file).read_text())
    except (OSError, ValueError):
        return None


def is_valid_build(model_dir: Path, key: str, marker_file: str) -> bool:
    marker = read_json_marker(model_dir, marker_file)
    return bool(marker) and marker.get("cache_key") == key and (Path(model_dir) / "config.json").is_file()


@contextlib.contextmanager
def build_lock(target: Path) -> Iterator[None]:
    """Concurrent callers asking for the same model wait for one build instead of racing."""
    lock_path = target.parent / f".{target.name}.lock"
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(
    target: Path,
    key: str,
    build_into: Callable[[Path], None],
    *,
    marker_file: str,
    what: str,
    force: bool = False,
) -> Path:
    """Return ``target`` once it holds a valid build for ``key``, calling ``build_into(tmp_dir)`` if not.

    ``build_into`` must write the marker file (``{"cache_key": key, ...}``) last. ``what`` names the
    model in messages ("tiny-model", "SmolLM2").
    """
    target = Path(target).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(target):
        if is_valid_build(target, key, marker_file) and not force:
            logger.info("using cached %s model %s", what, target)
            return target
        foreign = read_json_marker(target, marker_file) is None
        if target.exists() and not force and foreign and any(target.iterdir()):
            raise TrainingError(
                f"out_dir {target} exists and is not a {what} build; pass force=True to replace it"
            )
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            build_into(tmp)
            if not is_valid_build(tmp, key, marker_file):
                raise TrainingError(
                    f"the {what} build in {tmp} wrote no valid {marker_file}"
                )  # a bug, not user error
            # mkdtemp (and the weights writer) make things private; a model directory is for sharing.
            tmp.chmod(0o755)
            for path in tmp.iterdir():
                path.chmod(0o644)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("%s model ready at %s", what, target)
    return target
