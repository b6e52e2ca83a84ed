"""LMCache: keys, memory LRU, disk layout, corruption handling, concurrent writers."""

from __future__ import annotations

import json
import logging
import threading

from dspylite.cache import LMCache, cache_key, default_cache_dir, shared_cache
from dspylite.completion import Completion


def completions(text: str = "answer") -> list[Completion]:
    return [
        Completion(
            text=text,
            model="m",
            finish_reason="stop",
            token_ids=[1, 2],
            prompt_token_ids=[3],
            logprobs=[-0.5, -0.25],
            usage={"prompt_tokens": 1, "completion_tokens": 2},
        )
    ]


def request(**changes) -> dict:
    return {
        "model": "m",
        "model_type": "chat",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.0,
        "n": 1,
        "rollout_id": None,
        **changes,
    }


def test_key_is_canonical_and_separates_what_matters():
    base = cache_key(request())
    assert base == cache_key(dict(reversed(list(request().items()))))
    assert len(base) == 64
    assert cache_key(request(rollout_id=1)) != base
    assert cache_key(request(rollout_id=1)) != cache_key(request(rollout_id=2))
    assert cache_key(request(temperature=0.7)) != base
    assert cache_key(request(n=2)) != base
    assert cache_key(request(model="adapter-v1")) != base


def test_round_trip_through_disk_marks_cached(tmp_path):
    key = cache_key(request())
    LMCache(tmp_path).put(key, completions())
    path = tmp_path / key[:2] / f"{key}.json"
    stored = json.loads(path.read_text())
    assert stored["key"] == key and stored["completions"][0]["text"] == "answer"
    assert "cached" not in stored["completions"][0]

    fresh = LMCache(tmp_path)  # empty memory: must come from disk
    [hit] = fresh.get(key)
    assert hit.cached is True
    assert (hit.text, hit.token_ids, hit.prompt_token_ids, hit.logprobs) == (
        "answer",
        [1, 2],
        [3],
        [-0.5, -0.25],
    )
    assert hit.usage == {"prompt_tokens": 1, "completion_tokens": 2}
    assert fresh.get(cache_key(request(rollout_id=5))) is None


def test_hits_are_independent_copies(tmp_path):
    cache = LMCache(tmp_path)
    key = cache_key(request())
    cache.put(key, completions())
    first = cache.get(key)[0]
    first.token_ids.append(99)
    first.usage["prompt_tokens"] = 1000
    second = cache.get(key)[0]
    assert second.token_ids == [1, 2] and second.usage["prompt_tokens"] == 1


def test_memory_layer_is_lru_bounded(tmp_path):
    cache = LMCache(tmp_path, memory_size=2, use_disk=False)
    keys = [cache_key(request(rollout_id=i)) for i in range(3)]
    cache.put(keys[0], completions("a"))
    cache.put(keys[1], completions("b"))
    assert cache.get(keys[0])[0].text == "a"  # touch: keys[1] is now the oldest
    cache.put(keys[2], completions("c"))
    assert len(cache) == 2
    assert cache.get(keys[1]) is None
    assert cache.get(keys[0])[0].text == "a" and cache.get(keys[2])[0].text == "c"
    assert not list(tmp_path.iterdir())


def test_corrupt_entry_warns_is_removed_and_misses(tmp_path, caplog):
    key = cache_key(request())
    LMCache(tmp_path).put(key, completions())
    path = tmp_path / key[:2] / f"{key}.json"
    path.write_text('{"version": 1, "key": "' + key + '", "completions": [{"te')  # truncated write

    with caplog.at_level(logging.WARNING, logger="dspylite.cache"):
        assert LMCache(tmp_path).get(key) is None
    assert any("corrupt" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)
    assert not path.exists()


def test_entry_with_wrong_shape_or_key_counts_as_corrupt(tmp_path, caplog):
    key = cache_key(request())
    path = tmp_path / key[:2] / f"{key}.json"
    path.parent.mkdir(parents=True)
    for bad in (
        ["not", "an", "object"],
        {"version": 1, "key": "other", "completions": []},
        {"version": 1, "key": key, "completions": [{"no_text": 1}]},
    ):
        path.write_text(json.dumps(bad))
        with caplog.at_level(logging.WARNING, logger="dspylite.cache"):
            assert LMCache(tmp_path).get(key) is None
        assert not path.exists()
    assert len([r for r in caplog.records if "corrupt" in r.getMessage()]) == 3


def test_leftover_temp_file_from_a_killed_writer_is_harmless(tmp_path):
    key = cache_key(request())
    shard = tmp_path / key[:2]
    shard.mkdir(parents=True)
    (shard / f".{key}.123.deadbeef.tmp").write_text('{"version": 1, "ke')
    cache = LMCache(tmp_path)
    assert cache.get(key) is None
    cache.put(key, completions())
    assert LMCache(tmp_path).get(key)[0].text == "answer"


def test_concurrent_writers_leave_only_valid_entries(tmp_path):
    keys = [cache_key(request(rollout_id=i)) for i in range(5)]
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        cache = LMCache(tmp_path)  # separate instances: they only share the disk, like processes would
        try:
            for round_ in range(40):
                for key in keys:
                    cache.put(key, completions(f"w{worker}-r{round_}"))
                    cache.clear_memory()
                    assert cache.get(key) is not None
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert not errors
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == len(keys), files  # no temp files left behind
    for path in files:
        data = json.loads(path.read_text())
        assert data["key"] == path.stem and data["completions"][0]["text"].startswith("w")


def test_unwritable_directory_logs_and_keeps_memory(tmp_path, caplog):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    cache = LMCache(blocker)
    key = cache_key(request())
    with caplog.at_level(logging.WARNING, logger="dspylite.cache"):
        cache.put(key, completions())
    assert any("could not write" in r.getMessage() for r in caplog.records)
    assert cache.get(key)[0].text == "answer"


def test_default_dir_and_shared_instances(tmp_path, monkeypatch):
    monkeypatch.setenv("DSPYLITE_CACHE_DIR", str(tmp_path / "env-cache"))
    assert default_cache_dir() == tmp_path / "env-cache"
    assert shared_cache() is shared_cache(tmp_path / "env-cache")
    assert shared_cache(tmp_path / "other") is not shared_cache()
