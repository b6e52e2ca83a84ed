"""Issue 14, LM client: malformed 200 bodies are typed errors, a failing server trips a circuit
breaker, bad sampling settings are refused, and corrupt-but-well-formed cache entries self-heal."""

from __future__ import annotations

import json
import logging
import time

import pytest
from raw_servers import HungServer, RawBodyServer

from dspylite.cache import LMCache
from dspylite.completion import Completion
from dspylite.errors import (
    ConfigError,
    LMConnectionError,
    LMRequestError,
    LMResponseError,
    LMServerError,
    LMUnavailableError,
)
from dspylite.lm import LM

MESSAGES = [{"role": "user", "content": "Say hi"}]
FAST = {"backoff_base": 0.001, "backoff_max": 0.002, "cache": False}


def _choice(text: str = "hi") -> dict:
    return {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}


# ---- item 3: 200 responses of the wrong shape ----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (json.dumps([_choice()]), r"returned a JSON list, not a completion object"),
        (json.dumps({"choices": ["hi"]}), r"a choice that is not a JSON object"),
        (json.dumps({"choices": [_choice()], "usage": {"prompt_tokens": "many"}}), r"non-numeric usage"),
        (json.dumps({"choices": [_choice()], "usage": {"completion_tokens": [3]}}), r"non-numeric usage"),
        (json.dumps({"choices": [_choice()], "usage": "lots"}), r"'usage' that is not an object"),
        (json.dumps({"choices": [{"message": "hi"}]}), r"malformed choice"),
        (json.dumps({"choices": [{"message": {"content": 5}}]}), r"malformed choice"),
        (json.dumps({"choices": [{"message": {"content": "x"}, "token_ids": 5}]}), r"malformed choice"),
    ],
)
def test_malformed_200_bodies_are_typed_response_errors(body: str, match: str) -> None:
    with RawBodyServer(body.encode()) as server:
        lm = LM("m", api_base=server.api_base, num_retries=0, **FAST)
        with pytest.raises(LMResponseError, match=match) as info:
            lm.generate(MESSAGES)
    assert isinstance(info.value, LMServerError)  # callers that handle server errors handle these


# ---- item 2: circuit breaker ----------------------------------------------------------------------


def test_hung_server_trips_the_breaker_then_calls_fail_fast() -> None:
    with HungServer() as server:
        lm = LM("m", api_base=server.api_base, timeout=0.2, num_retries=1, max_consecutive_failures=2, **FAST)
        with pytest.raises(LMConnectionError):
            lm.generate(MESSAGES)
        # The second consecutive failure opens the breaker: that very call names the server.
        with pytest.raises(
            LMUnavailableError, match=r"127\.0\.0\.1:\d+/v1 is unavailable: 2 requests"
        ) as info:
            lm.generate(MESSAGES)
        assert info.value.api_base == server.api_base and info.value.failures == 2
        seen = server.connections
        started = time.perf_counter()
        for _ in range(20):
            with pytest.raises(LMUnavailableError):
                lm.generate(MESSAGES)
        assert time.perf_counter() - started < 0.5  # 20 calls, none waits for a timeout
        assert server.connections == seen  # and none reaches the server
        # Copies (programs are deep-copied by optimizers; adapters are bound with copy()) share it.
        with pytest.raises(LMUnavailableError):
            lm.copy(model="adapter-1").generate(MESSAGES)
        lm.reset_breaker()
        with pytest.raises(LMConnectionError):
            lm.generate(MESSAGES)


def test_a_success_resets_the_count_and_4xx_do_not_count(fake_server) -> None:
    lm = LM("stub-model", api_base=fake_server.api_base, num_retries=0, max_consecutive_failures=2, **FAST)
    for _ in range(3):
        fake_server.fail_next(1, status=503)
        with pytest.raises(LMServerError):
            lm.generate(MESSAGES)
        assert lm.generate(MESSAGES)  # resets the count: isolated failures never open it
    fake_server.fail_next(5, status=400)
    for _ in range(5):
        with pytest.raises(LMRequestError):  # the request is wrong, not the server
            lm.generate(MESSAGES)
    assert not lm.breaker.is_open
    fake_server.fail_next(2, status=500)
    with pytest.raises(LMServerError):
        lm.generate(MESSAGES)
    with pytest.raises(LMUnavailableError, match=r"last error: LMServerError"):
        lm.generate(MESSAGES)


def test_garbage_bodies_count_toward_the_breaker() -> None:
    with RawBodyServer(b"[1, 2]") as server:
        lm = LM("m", api_base=server.api_base, num_retries=0, max_consecutive_failures=3, **FAST)
        for _ in range(2):
            with pytest.raises(LMResponseError):
                lm.generate(MESSAGES)
        with pytest.raises(LMUnavailableError):
            lm.generate(MESSAGES)
        assert server.posts == 3


def test_breaker_can_be_disabled(fake_server) -> None:
    lm = LM("stub-model", api_base=fake_server.api_base, num_retries=0, max_consecutive_failures=None, **FAST)
    fake_server.fail_next(10, status=500)
    for _ in range(10):
        with pytest.raises(LMServerError):
            lm.generate(MESSAGES)
    assert lm.generate(MESSAGES)


# ---- item 6: settings a server would reject ---------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("temperature", -0.5),
        ("temperature", float("nan")),
        ("max_tokens", -1),
        ("max_tokens", 0),
        ("max_tokens", 2.5),
        ("num_retries", -1),
        ("timeout", 0),
        ("max_consecutive_failures", 0),
    ],
)
def test_bad_settings_are_refused_naming_the_field(setting: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"LM: '{setting}' must be"):
        LM("m", **{setting: value})
    with pytest.raises(ConfigError, match=rf"LM.copy: '{setting}' must be"):
        LM("m").copy(**{setting: value})


# ---- item 6: cache entries with valid structure but bad fields --------------------------------------


@pytest.mark.parametrize("bad", [{"usage": None}, {"token_ids": 5}, {"logprobs": "x"}, {"text": 3}])
def test_bad_field_cache_entry_is_a_miss_with_a_warning_and_is_overwritten(
    fake_server, tmp_path, caplog, bad: dict
) -> None:
    lm = LM("stub-model", api_base=fake_server.api_base, cache=True, cache_dir=tmp_path, num_retries=0)
    fake_server.push("first")
    assert lm("hi") == ["first"]
    [entry_path] = list(tmp_path.glob("*/*.json"))
    data = json.loads(entry_path.read_text())
    data["completions"][0].update(bad)
    entry_path.write_text(json.dumps(data))
    fresh = LM("stub-model", api_base=fake_server.api_base, cache=True, cache_dir=tmp_path)
    fresh._cache = LMCache(tmp_path)  # a new process: nothing in memory
    fake_server.push("second")
    with caplog.at_level(logging.WARNING, logger="dspylite.cache"):
        assert fresh("hi") == ["second"]  # a miss: the server was asked again
    warnings = [r for r in caplog.records if "corrupt" in r.getMessage()]
    assert len(warnings) == 1 and str(entry_path) in warnings[0].getMessage()
    # Self-healed: the entry was rewritten with the new answer, and reads back as a hit.
    again = LMCache(tmp_path).get(entry_path.stem)
    assert again is not None and [c.text for c in again] == ["second"]
    assert isinstance(again[0], Completion) and again[0].cached


def test_server_usage_floats_are_stored_as_ints(tmp_path) -> None:
    body = {"choices": [_choice("ok")], "usage": {"prompt_tokens": 4.0, "completion_tokens": 2.0}}
    with RawBodyServer(json.dumps(body).encode()) as server:
        lm = LM("m", api_base=server.api_base, cache=True, cache_dir=tmp_path, num_retries=0)
        [completion] = lm.generate(MESSAGES)
    assert completion.usage == {"prompt_tokens": 4, "completion_tokens": 2}
    [entry_path] = list(tmp_path.glob("*/*.json"))
    assert LMCache(tmp_path).get(entry_path.stem) is not None  # valid as stored: no self-heal loop
