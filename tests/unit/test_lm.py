"""LM client against the fake vLLM server (tests/fake_vllm_server.py): protocol, retries, errors, cache, round-robin, usage."""

from __future__ import annotations

import copy
import json
import socket
import threading
import time

import pytest
from fake_vllm_server import FakeVLLM, fake_logprobs, fake_token_ids

from dspylite.completion import Completion, LanguageModel
from dspylite.errors import ConfigError, LMConnectionError, LMRequestError, LMServerError
from dspylite.lm import LM, flatten_messages, strip_provider_prefix

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
FAST_RETRY = {"backoff_base": 0.01, "backoff_max": 0.02}


def make_lm(server: FakeVLLM, model: str = "stub-model", **overrides) -> LM:
    settings = {
        "api_base": server.api_base,
        "api_key": "sk-test",
        "cache": False,
        "timeout": 5.0,
        **FAST_RETRY,
        **overrides,
    }
    return LM(model, **settings)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- protocol -----------------------------------------------------------------------------------


def test_lm_implements_language_model_protocol(fake_server):
    assert isinstance(make_lm(fake_server), LanguageModel)


def test_chat_completion_fills_every_field(fake_server):
    fake_server.push("hello there world")
    lm = make_lm(fake_server)
    [completion] = lm.generate(MESSAGES)

    assert completion.text == "hello there world"
    assert completion.model == "stub-model"
    assert completion.finish_reason == "stop"
    assert completion.token_ids == fake_token_ids("hello there world")
    assert completion.prompt_token_ids == fake_token_ids("Be brief.\nSay hi")
    assert completion.logprobs is None
    assert completion.usage == {"prompt_tokens": 4, "completion_tokens": 3}
    assert completion.cached is False

    [request] = fake_server.completion_requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["Authorization"] == "Bearer sk-test"
    assert request.body == {
        "model": "stub-model",
        "messages": MESSAGES,
        "temperature": 0.0,
        "max_tokens": 512,
        "return_token_ids": True,
    }


def test_chat_logprobs_are_requested_and_parsed(fake_server):
    fake_server.push("a b c")
    lm = make_lm(fake_server, logprobs=True)
    [completion] = lm.generate(MESSAGES)
    assert completion.logprobs == pytest.approx(fake_logprobs(3))
    body = fake_server.completion_requests[0].body
    assert body["logprobs"] is True and body["top_logprobs"] == 0


def test_text_completions_endpoint_flattens_messages_and_reads_token_logprobs(fake_server):
    fake_server.push("forty two")
    lm = make_lm(fake_server, model_type="text", logprobs=True)
    [completion] = lm.generate(MESSAGES)

    request = fake_server.completion_requests[0]
    assert request.path == "/v1/completions"
    assert request.body["prompt"] == flatten_messages(MESSAGES) == "Be brief.\n\nSay hi"
    assert request.body["logprobs"] == 0
    assert "messages" not in request.body
    assert completion.text == "forty two"
    assert completion.token_ids == fake_token_ids("forty two")
    assert completion.prompt_token_ids == fake_token_ids("Be brief.\n\nSay hi")
    assert completion.logprobs == pytest.approx(fake_logprobs(2))


def test_text_model_accepts_a_prompt(fake_server):
    lm = make_lm(fake_server, model_type="text")
    assert lm(prompt="Once upon") == ["stub-model echoes: Once upon"]
    assert fake_server.completion_requests[0].body["prompt"] == "Once upon"


def test_server_without_vllm_extras_leaves_fields_empty(fake_server):
    # Plain OpenAI servers reject return_token_ids; turning it off must not send it at all.
    fake_server.push("plain answer")
    lm = make_lm(fake_server, return_token_ids=False)
    [completion] = lm.generate(MESSAGES)
    assert "return_token_ids" not in fake_server.completion_requests[0].body
    assert completion.text == "plain answer"
    assert completion.token_ids is None and completion.prompt_token_ids is None
    assert completion.usage == {"prompt_tokens": 4, "completion_tokens": 2}


def test_length_finish_reason_is_kept(fake_server):
    fake_server.push("one two three four")
    [completion] = make_lm(fake_server, max_tokens=2).generate(MESSAGES)
    assert completion.text == "one two"
    assert completion.finish_reason == "length"


def test_n_returns_all_choices_with_their_own_token_counts(fake_server):
    fake_server.push("first", "second answer", "third one here")
    completions = make_lm(fake_server).generate(MESSAGES, n=3)
    assert [c.text for c in completions] == ["first", "second answer", "third one here"]
    assert [c.usage["completion_tokens"] for c in completions] == [1, 2, 3]
    assert fake_server.completion_requests[0].body["n"] == 3


def test_call_kwargs_override_instance_sampling_params(fake_server):
    lm = make_lm(fake_server, temperature=0.0, top_p=0.9, seed=7)
    lm.generate(MESSAGES, temperature=0.8, stop=["\n"], rollout_id=3)
    body = fake_server.completion_requests[0].body
    assert body["temperature"] == 0.8
    assert body["top_p"] == 0.9 and body["seed"] == 7 and body["stop"] == ["\n"]
    assert "rollout_id" not in body


def test_dspy_style_call_returns_texts(fake_server):
    fake_server.push("x", "y")
    lm = make_lm(fake_server)
    assert lm(messages=MESSAGES, n=2) == ["x", "y"]
    assert lm("just a prompt") == ["stub-model echoes: just a prompt"]
    assert fake_server.completion_requests[1].body["messages"] == [
        {"role": "user", "content": "just a prompt"}
    ]


@pytest.mark.parametrize("given", ["openai/stub-model", "hosted_vllm/stub-model", "stub-model"])
def test_provider_prefix_is_stripped_before_sending(fake_server, given):
    lm = make_lm(fake_server, model=given)
    lm.generate(MESSAGES)
    assert lm.model == given
    assert fake_server.completion_requests[0].body["model"] == "stub-model"


def test_strip_provider_prefix_keeps_organisation_names():
    assert strip_provider_prefix("Qwen/Qwen3-0.6B") == "Qwen/Qwen3-0.6B"
    assert strip_provider_prefix("hosted_vllm/Qwen/Qwen3-0.6B") == "Qwen/Qwen3-0.6B"


def test_defaults_come_from_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_BASE", "http://10.0.0.1:9000/v1/")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    lm = LM("m")
    assert lm.api_base == "http://10.0.0.1:9000/v1"
    assert lm.api_key == "sk-env"
    monkeypatch.delenv("OPENAI_API_BASE")
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    lm = LM("m")
    assert lm.api_base == "http://127.0.0.1:8000/v1"
    assert lm.api_key == "EMPTY"


@pytest.mark.parametrize(
    "bad",
    [{"api_base": "127.0.0.1:8000"}, {"api_base": []}, {"model_type": "embedding"}, {"num_retries": -1}],
)
def test_bad_settings_raise_config_error_naming_the_option(bad):
    option = next(iter(bad))
    with pytest.raises(ConfigError, match=option):
        LM("m", **bad)


# ---- retries and errors -------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_transient_status_is_retried_then_succeeds(fake_server, status):
    fake_server.fail_next(2, status=status)
    fake_server.push("finally")
    lm = make_lm(fake_server, num_retries=3)
    [completion] = lm.generate(MESSAGES)
    assert completion.text == "finally"
    assert len(fake_server.completion_requests) == 3
    assert lm.usage["retries"] == 2 and lm.usage["calls"] == 1


def test_retry_after_header_is_honoured(fake_server):
    fake_server.fail_next(1, status=429, message="slow down", headers={"Retry-After": "0.3"})
    lm = make_lm(fake_server)
    start = time.perf_counter()
    lm.generate(MESSAGES)
    assert time.perf_counter() - start >= 0.3


def test_exhausted_retries_raise_server_error_naming_url_and_model(fake_server):
    fake_server.fail_next(10, status=503, message="engine overloaded")
    lm = make_lm(fake_server, num_retries=2)
    with pytest.raises(LMServerError) as info:
        lm.generate(MESSAGES)
    assert info.value.status_code == 503
    message = str(info.value)
    assert fake_server.api_base in message and "'stub-model'" in message and "engine overloaded" in message
    assert len(fake_server.completion_requests) == 3


def test_unknown_model_raises_request_error_at_once_with_server_message(fake_server):
    lm = make_lm(fake_server, model="no-such-model", num_retries=3)
    with pytest.raises(LMRequestError) as info:
        lm.generate(MESSAGES)
    assert info.value.status_code == 404
    assert "The model `no-such-model` does not exist." in str(info.value)
    assert fake_server.api_base in str(info.value)
    assert len(fake_server.completion_requests) == 1


def test_bad_request_is_not_retried(fake_server):
    fake_server.fail_next(1, status=400, message="max_tokens must be at least 1")
    lm = make_lm(fake_server, num_retries=3)
    with pytest.raises(LMRequestError, match="HTTP 400: max_tokens must be at least 1"):
        lm.generate(MESSAGES)
    assert len(fake_server.completion_requests) == 1
    assert lm.usage["retries"] == 0


def test_wrong_api_key_is_a_request_error():
    with FakeVLLM(api_key="sk-right") as server:
        with pytest.raises(LMRequestError, match="401"):
            make_lm(server, api_key="sk-wrong").generate(MESSAGES)
        assert make_lm(server, api_key="sk-right").generate(MESSAGES)[0].text == "stub-model echoes: Say hi"


def test_unreachable_server_raises_connection_error_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    lm = LM("stub-model", api_base=url, num_retries=1, cache=False, **FAST_RETRY)
    with pytest.raises(LMConnectionError) as info:
        lm.generate(MESSAGES)
    assert url in str(info.value) and "'stub-model'" in str(info.value)
    assert lm.usage["retries"] == 1


def test_dropped_connection_is_retried(fake_server):
    fake_server.close_next(1)
    fake_server.push("after the drop")
    lm = make_lm(fake_server)
    assert lm.generate(MESSAGES)[0].text == "after the drop"
    assert lm.usage["retries"] == 1


def test_timeout_is_retried(fake_server):
    fake_server.delay_next(1, seconds=1.0)
    lm = make_lm(fake_server, timeout=0.2)
    assert lm.generate(MESSAGES)[0].text == "stub-model echoes: Say hi"
    assert lm.usage["retries"] == 1


# ---- several endpoints --------------------------------------------------------------------------


def test_requests_go_round_robin_over_endpoints():
    with FakeVLLM() as first, FakeVLLM() as second:
        lm = make_lm(first, api_base=[first.api_base, second.api_base])
        assert lm.api_base == [first.api_base, second.api_base]
        for _ in range(6):
            lm.generate(MESSAGES)
        assert len(first.completion_requests) == 3 and len(second.completion_requests) == 3


def test_retry_moves_to_the_next_endpoint():
    with FakeVLLM() as first, FakeVLLM() as second:
        first.fail_next(5, status=500)
        second.push("from the healthy one")
        lm = make_lm(first, api_base=[first.api_base, second.api_base], num_retries=1)
        assert lm.generate(MESSAGES)[0].text == "from the healthy one"


# ---- usage, history, copies, state --------------------------------------------------------------


def test_usage_totals_are_exact_under_threads(fake_server):
    lm = make_lm(fake_server)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(5):
                lm.generate([{"role": "user", "content": f"q {k} {i}"}])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    usage = lm.usage
    assert usage["calls"] == 40
    # each prompt "q K I" is 3 fake tokens; each echo "stub-model echoes: q K I" is 5
    assert usage["prompt_tokens"] == 120 and usage["completion_tokens"] == 200
    assert usage["cache_hits"] == 0 and usage["retries"] == 0


def test_64_concurrent_requests_run_in_parallel(fake_server):
    fake_server.delay_next(64, seconds=1.0)
    lm = make_lm(fake_server, num_retries=0)
    results: list[str] = []
    threads = [threading.Thread(target=lambda i=i: results.append(lm(f"q{i}")[0])) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted(f"stub-model echoes: q{i}" for i in range(64))
    # Counted at the server, not timed: a client pool that serialised them would keep this near 1-10.
    assert fake_server.max_in_flight >= 32, (
        f"at most {fake_server.max_in_flight} requests were in flight at once"
    )


def test_history_is_bounded_and_inspectable(fake_server):
    lm = make_lm(fake_server, history_size=3)
    for i in range(5):
        lm.generate([{"role": "user", "content": f"question {i}"}])
    assert len(lm.history) == 3
    text = lm.inspect_history(2)
    assert isinstance(text, str)
    assert "question 3" in text and "stub-model echoes: question 4" in text and "question 2" not in text
    assert fake_server.api_base in text


def test_copy_binds_another_model_and_shares_client_and_cache(tmp_path):
    with FakeVLLM(accept_any_model=True) as server:
        lm = make_lm(server, cache=True, cache_dir=tmp_path)
        adapter = lm.copy(model="adapter-v3", temperature=0.5)
        adapter.generate(MESSAGES)
        body = server.completion_requests[0].body
        assert body["model"] == "adapter-v3" and body["temperature"] == 0.5
        assert lm.model == "stub-model" and lm.temperature == 0.0
        assert adapter._transport is lm._transport
        assert adapter._get_cache() is lm._get_cache()
        assert adapter.usage["calls"] == 1 and lm.usage["calls"] == 0


def test_deepcopy_shares_the_http_client(fake_server):
    lm = make_lm(fake_server)
    lm.generate(MESSAGES)
    clone = copy.deepcopy({"lm": lm})["lm"]
    assert clone is not lm and clone._transport is lm._transport
    assert clone._transport.client is lm._transport.client
    clone.generate(MESSAGES)
    assert len(fake_server.completion_requests) == 2


def test_dump_state_excludes_api_key_and_round_trips():
    lm = LM(
        "hosted_vllm/base",
        api_base="http://127.0.0.1:9/v1",
        api_key="sk-secret",
        temperature=0.3,
        max_tokens=64,
        top_p=0.8,
        model_type="text",
        logprobs=True,
    )
    state = lm.dump_state()
    assert "sk-secret" not in json.dumps(state) and "api_key" not in state
    assert state["model"] == "hosted_vllm/base" and state["top_p"] == 0.8 and state["model_type"] == "text"
    restored = LM.load_state(state, api_base="http://127.0.0.1:10/v1", api_key="sk-other")
    assert restored.dump_state() == {**state, "api_base": "http://127.0.0.1:10/v1"}
    assert restored.api_key == "sk-other"


def test_load_state_accepts_a_dspy_lm_state():
    dspy_state = {
        "model": "openai/base",
        "model_type": "chat",
        "cache": True,
        "num_retries": 3,
        "finetuning_model": None,
        "launch_kwargs": {},
        "train_kwargs": {},
        "temperature": 0.0,
        "max_tokens": 1000,
    }
    lm = LM.load_state(dspy_state, api_base="http://127.0.0.1:9/v1")
    assert lm.served_model == "base" and lm.max_tokens == 1000
    assert not {"launch_kwargs", "train_kwargs", "finetuning_model"} & set(lm.kwargs)


# ---- cache through the LM -----------------------------------------------------------------------


def test_cache_hit_skips_the_server_and_marks_completion(fake_server, tmp_path):
    lm = make_lm(fake_server, cache=True, cache_dir=tmp_path)
    first = lm.generate(MESSAGES)
    second = lm.generate(MESSAGES)
    assert len(fake_server.completion_requests) == 1
    assert second[0].cached is True and first[0].cached is False
    assert second[0].text == first[0].text and second[0].token_ids == first[0].token_ids
    assert lm.usage["cache_hits"] == 1 and lm.usage["calls"] == 1
    assert "from cache" in lm.inspect_history(1)


def test_rollout_ids_keep_samples_distinct(fake_server, tmp_path):
    fake_server.push("sample A", "sample B")
    lm = make_lm(fake_server, cache=True, cache_dir=tmp_path, temperature=1.0)
    a = lm.generate(MESSAGES, rollout_id=0)[0].text
    b = lm.generate(MESSAGES, rollout_id=1)[0].text
    assert (a, b) == ("sample A", "sample B")
    assert lm.generate(MESSAGES, rollout_id=0)[0].text == "sample A"
    assert len(fake_server.completion_requests) == 2


def test_cache_key_ignores_api_key_and_api_base(tmp_path):
    with FakeVLLM() as first, FakeVLLM() as second:
        make_lm(first, cache=True, cache_dir=tmp_path, api_key="sk-one").generate(MESSAGES)
        hit = make_lm(second, cache=True, cache_dir=tmp_path, api_key="sk-two").generate(MESSAGES)
        assert hit[0].cached is True
        assert len(second.completion_requests) == 0
    for path in tmp_path.rglob("*.json"):
        assert "sk-one" not in path.read_text()


def test_cache_key_depends_on_sampling_params_and_n(fake_server, tmp_path):
    lm = make_lm(fake_server, cache=True, cache_dir=tmp_path)
    lm.generate(MESSAGES)
    lm.generate(MESSAGES, temperature=0.5)
    lm.generate(MESSAGES, n=2)
    lm.copy(logprobs=True).generate(MESSAGES)
    assert len(fake_server.completion_requests) == 4


def test_errors_are_not_cached(fake_server, tmp_path):
    lm = make_lm(fake_server, cache=True, cache_dir=tmp_path)
    fake_server.fail_next(1, status=400, message="nope")
    with pytest.raises(LMRequestError):
        lm.generate(MESSAGES)
    assert lm.generate(MESSAGES)[0].cached is False
    assert len(fake_server.completion_requests) == 2


def test_cache_false_disables_both_layers(fake_server, tmp_path):
    lm = make_lm(fake_server, cache=False, cache_dir=tmp_path)
    lm.generate(MESSAGES)
    lm.generate(MESSAGES)
    assert len(fake_server.completion_requests) == 2
    assert not list(tmp_path.rglob("*.json"))
    cached_lm = make_lm(fake_server, cache=True, cache_dir=tmp_path)
    cached_lm.generate(MESSAGES)
    cached_lm.generate(MESSAGES, cache=False)  # per-call opt-out
    assert len(fake_server.completion_requests) == 4


def test_cached_completion_can_be_mutated_without_corrupting_the_cache(fake_server, tmp_path):
    lm = make_lm(fake_server, cache=True, cache_dir=tmp_path)
    lm.generate(MESSAGES)
    hit = lm.generate(MESSAGES)[0]
    hit.token_ids.append(-1)
    assert isinstance(hit, Completion)
    assert lm.generate(MESSAGES)[0].token_ids == fake_token_ids("stub-model echoes: Say hi")
