"""LM response cache: an in-memory LRU in front of one JSON file per key on disk.

Disk entries are written to a temporary file and moved into place with ``os.replace``, so concurrent
writers (threads or processes) and a killed process never leave a half-written entry. An entry that
cannot be read back is logged, removed and treated as a miss. Errors are never stored: only the
completions of a successful call reach ``put``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

from dspylite.completion import Completion

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "DSPYLITE_CACHE_DIR"
_ENTRY_VERSION = 1


def default_cache_dir() -> Path:
    """``$DSPYLITE_CACHE_DIR`` when set, else ``~/.cache/dspylite/lm``."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "dspylite" / "lm"


def cache_key(request: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a request description.

    The caller decides what goes in (model, model_type, messages or prompt, sampling params, n,
    rollout_id) and keeps credentials and the server address out, so the same request to a
    replica or with a rotated key hits the same entry.
    """
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class LMCache:
    """Thread-safe two-layer cache mapping a key to the list of completions of one call."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        memory_size: int = 10_000,
        use_disk: bool = True,
    ):
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()
        self.memory_size = memory_size
        self.use_disk = use_disk
        self._memory: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def path_for(self, key: str) -> Path:
        # Two hex characters of sharding keep directories small (256 of them) even for millions of keys.
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> list[Completion] | None:
        """The cached completions (fresh objects marked ``cached=True``), or None on a miss."""
        with self._lock:
            entry = self._memory.get(key)
            if entry is not None:
                self._memory.move_to_end(key)
        if entry is None and self.use_disk:
            entry = self._read_disk(key)
            if entry is not None:
                self._remember(key, entry)
        if entry is None:
            return None
        return [_from_stored(d) for d in entry]

    def put(self, key: str, completions: list[Completion]) -> None:
        entry = [_to_stored(c) for c in completions]
        self._remember(key, entry)
        if self.use_disk:
            self._write_disk(key, entry)

    def clear_memory(self) -> None:
        with self._lock:
            self._memory.clear()

    def __len__(self) -> int:
        return len(self._memory)

    def _remember(self, key: str, entry: list[dict[str, Any]]) -> None:
        if self.memory_size <= 0:
            return
        with self._lock:
            self._memory[key] = entry
            self._memory.move_to_end(key)
            while len(self._memory) > self.memory_size:
                self._memory.popitem(last=False)

    def _read_disk(self, key: str) -> list[dict[str, Any]] | None:
        path = self.path_for(key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("LM cache entry %s could not be read (%s); treating it as a miss", path, exc)
            return None
        try:
            data = json.loads(raw)
            if data.get("version") != _ENTRY_VERSION or data.get("key") != key:
                raise ValueError(f"version {data.get('version')!r}, key {data.get('key')!r}")
            entry = data["completions"]
            if not isinstance(entry, list) or not all(isinstance(d, dict) and "text" in d for d in entry):
                raise ValueError("'completions' is not a list of completion objects")
            for stored in entry:
                _check_stored(stored)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning(
                "LM cache entry %s is corrupt (%s); removing it and treating it as a miss", path, exc
            )
            try:
                path.unlink()
            except OSError:
                pass
            return None
        return entry

    def _write_disk(self, key: str, entry: list[dict[str, Any]]) -> None:
        path = self.path_for(key)
        payload = json.dumps(
            {"version": _ENTRY_VERSION, "key": key, "completions": entry}, ensure_ascii=False
        )
        tmp = path.with_name(f".{key}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(payload)
            os.replace(tmp, path)
        except OSError as exc:
            # A cache that cannot be written must not fail the LM call that produced a good answer.
            logger.warning("could not write LM cache entry %s: %s", path, exc)
            try:
                tmp.unlink()
            except OSError:
                pass


def _check_stored(data: dict[str, Any]) -> None:
    """Raise ValueError when a stored completion's fields have the wrong types.

    A structurally valid entry with ``usage: null`` or ``token_ids: 5`` (a hand edit, another
    version's writer, bit rot) would otherwise fail every later call for that prompt.
    """
    if not isinstance(data.get("text"), str):
        raise ValueError("'text' is not a string")
    for name in ("model", "finish_reason", "served_by"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise ValueError(f"{name!r} is not a string")
    for name in ("token_ids", "prompt_token_ids"):
        value = data.get(name)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise ValueError(f"{name!r} is not a list of integers")
    logprobs = data.get("logprobs")
    if logprobs is not None and not (
        isinstance(logprobs, list)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in logprobs)
    ):
        raise ValueError("'logprobs' is not a list of numbers")
    usage = data.get("usage", {})
    if not isinstance(usage, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in usage.values()
    ):
        raise ValueError("'usage' is not an object of integer counts")


def _to_stored(completion: Completion) -> dict[str, Any]:
    data = completion.to_dict()
    data.pop("cached", None)
    return data


def _from_stored(data: dict[str, Any]) -> Completion:
    completion = Completion.from_dict(data)
    # Copy the lists so a caller that edits a returned completion cannot change the cached entry.
    for name in ("token_ids", "prompt_token_ids", "logprobs"):
        value = getattr(completion, name)
        if value is not None:
            setattr(completion, name, list(value))
    completion.usage = dict(completion.usage)
    completion.cached = True
    return completion


_SHARED: dict[str, LMCache] = {}
_SHARED_LOCK = threading.Lock()


def shared_cache(directory: str | os.PathLike[str] | None = None) -> LMCache:
    """One LMCache per directory in this process, so LMs writing to the same place share memory too."""
    resolved = Path(directory).expanduser() if directory is not None else default_cache_dir()
    name = str(resolved.absolute())
    with _SHARED_LOCK:
        cache = _SHARED.get(name)
        if cache is None:
            cache = _SHARED[name] = LMCache(resolved)
        return cache
