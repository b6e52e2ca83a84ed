"""An on-disk index of adapter versions: name -> directory, base model, rank, metrics.

Versions are immutable (DESIGN.md, invariant 2): a name is registered once and never points at
another directory later, so a new training step means a new name (``next_version_name``).

The index is one JSON file, rewritten atomically (temporary file + ``os.replace``) under an
exclusive lock on a sibling lock file, so trainers and servers in several processes can register
and read concurrently without losing entries or reading half-written JSON.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dspylite.errors import AdapterRegistryError
from serving.adapter_files import check_base_model, read_adapter

logger = logging.getLogger(__name__)

INDEX_FILE = "registry.json"
LOCK_FILE = "registry.lock"
_FORMAT_VERSION = 1
# Adapter names travel in URLs, file names and the OpenAI "model" field; keep them plain.
# \Z, not $: "$" also matches before a trailing newline, and "name\n" must not pass.
_NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


@dataclass(frozen=True)
class AdapterEntry:
    """One registered adapter version."""

    name: str
    path: str
    base_model: str | None
    rank: int
    created_at: str  # ISO 8601, UTC
    seq: int  # registration order; ``latest`` picks the highest
    metrics: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterEntry:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class AdapterRegistry:
    """Adapter versions registered under ``root`` (the index lives in ``root/registry.json``).

    >>> reg = AdapterRegistry("runs/demo/adapters")
    >>> name = reg.next_version_name("sft")          # "sft-1", then "sft-2", ...
    >>> reg.register(name, "runs/demo/adapters/sft-1", metrics={"dev": 0.61})
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().resolve()
        self.index_path = self.root / INDEX_FILE
        self.lock_path = self.root / LOCK_FILE

    # -- writes ---------------------------------------------------------------------------------

    def register(
        self,
        name: str,
        path: str | os.PathLike[str],
        base_model: str | None = None,
        *,
        metrics: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AdapterEntry:
        """Validate the adapter directory and record it under a new, never-used name.

        ``base_model`` defaults to the adapter's ``base_model_name_or_path``; when given it must
        agree with it. Metrics and metadata must be JSON-serialisable.
        """
        validate_name(name)
        info = read_adapter(path, name=name)
        if base_model is not None:
            check_base_model(info, base_model, name=name)
        metrics = dict(metrics or {})
        metadata = dict(metadata or {})
        _check_jsonable(metrics, f"metrics of adapter {name!r}")
        _check_jsonable(metadata, f"metadata of adapter {name!r}")
        with self._locked():
            entries = self._read()
            if name in entries:
                raise AdapterRegistryError(
                    f"adapter name {name!r} is already registered (path {entries[name].path!r}) in "
                    f"{self.index_path}; adapter versions are immutable, register the new version "
                    f"under a new name such as {self._next_name_locked(entries, _run_of(name))!r}"
                )
            entry = AdapterEntry(
                name=name,
                path=info.path,
                base_model=base_model if base_model is not None else info.base_model,
                rank=info.rank,
                created_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                seq=1 + max((e.seq for e in entries.values()), default=0),
                metrics=metrics,
                metadata=metadata,
            )
            entries[name] = entry
            self._write(entries)
        logger.info("registered adapter %s -> %s (rank %d)", name, entry.path, entry.rank)
        return entry

    def unregister(self, name: str) -> AdapterEntry:
        """Remove ``name`` from the index and return its entry; the adapter directory is left alone.

        For versions that never became part of a run's history (a trainer killed between registering
        a version and checkpointing the step that made it). The name stays used: ``next_version_name``
        may hand it out again, so callers that want names never reused keep a session token in them.
        """
        with self._locked():
            entries = self._read()
            if name not in entries:
                raise self._unknown(name, entries)
            entry = entries.pop(name)
            self._write(entries)
        logger.info("unregistered adapter %s (%s)", name, entry.path)
        return entry

    # -- reads ----------------------------------------------------------------------------------

    def get(self, name: str) -> AdapterEntry:
        entries = self._read()
        if name not in entries:
            raise self._unknown(name, entries)
        return entries[name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._read()

    def __len__(self) -> int:
        return len(self._read())

    def list(self, prefix: str | None = None) -> list[AdapterEntry]:
        """Entries in registration order, optionally only names starting with ``prefix``."""
        entries = sorted(self._read().values(), key=lambda e: e.seq)
        return [e for e in entries if prefix is None or e.name.startswith(prefix)]

    def latest(self, prefix: str | None = None) -> AdapterEntry | None:
        """The most recently registered entry (whose name starts with ``prefix``), or None."""
        entries = self.list(prefix)
        return entries[-1] if entries else None

    def next_version_name(self, run: str) -> str:
        """``<run>-<step>`` with a step one above the highest registered for ``run``."""
        validate_name(f"{run}-1")
        return self._next_name_locked(self._read(), run)

    # -- internals ------------------------------------------------------------------------------

    def _unknown(self, name: str, entries: dict[str, AdapterEntry]) -> AdapterRegistryError:
        known = ", ".join(sorted(entries)) or "none"
        return AdapterRegistryError(f"no adapter named {name!r} in {self.index_path} (registered: {known})")

    @staticmethod
    def _next_name_locked(entries: dict[str, AdapterEntry], run: str) -> str:
        pattern = re.compile(rf"\A{re.escape(run)}-(\d+)\Z")
        steps = [int(m.group(1)) for name in entries if (m := pattern.match(name))]
        return f"{run}-{max(steps, default=0) + 1}"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+b") as lock:
            _lock_file(lock)
            try:
                yield
            finally:
                _unlock_file(lock)

    def _read(self) -> dict[str, AdapterEntry]:
        # Readers need no lock: writers replace the file atomically, so a read sees a whole index.
        if not self.index_path.exists():
            return {}
        try:
            data = json.loads(self.index_path.read_text(encoding="utf-8"))
            raw = data["adapters"]
            return {name: AdapterEntry.from_dict(item) for name, item in raw.items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Not a cache: silently starting over would forget which directories are which versions.
            raise AdapterRegistryError(
                f"adapter registry index {self.index_path} is unreadable ({exc}); fix or move it aside"
            ) from exc

    def _write(self, entries: dict[str, AdapterEntry]) -> None:
        payload = {
            "format_version": _FORMAT_VERSION,
            "adapters": {name: entry.to_dict() for name, entry in entries.items()},
        }
        fd, tmp = tempfile.mkstemp(prefix=".registry-", suffix=".json.tmp", dir=self.root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(payload, fh, indent=2, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.index_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def validate_name(name: str) -> None:
    """Adapter names: letters, digits, ``.``, ``_``, ``-``; at most 128 characters."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise AdapterRegistryError(
            f"invalid adapter name {name!r}: use letters, digits, '.', '_' or '-' (start with a letter "
            "or digit, at most 128 characters)"
        )


def _run_of(name: str) -> str:
    match = re.match(r"\A(.*)-\d+\Z", name)
    return match.group(1) if match else name


def _check_jsonable(value: Any, what: str) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise AdapterRegistryError(f"{what} must be JSON-serialisable ({exc})") from exc


try:  # POSIX
    import fcntl

    def _lock_file(fh: Any) -> None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)

    def _unlock_file(fh: Any) -> None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

except ImportError:  # pragma: no cover - Windows
    import msvcrt

    def _lock_file(fh: Any) -> None:
        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)

    def _unlock_file(fh: Any) -> None:
        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
