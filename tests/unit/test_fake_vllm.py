"""The test double itself (tests/fake_vllm_server.py): the behaviours other tests rely on that none of
them checks directly — which names it answers for, where the API key applies, reply precedence."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from fake_vllm_server import FakeVLLM, RecordedRequest


def call(
    server: FakeVLLM, method: str, path: str, body: Any = None, key: str | None = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def chat(model: str, text: str = "hi") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def test_completions_answer_for_the_base_and_loaded_adapters_only() -> None:
    with FakeVLLM("/models/base", served_model_name="base") as fake:
        assert call(fake, "POST", "/v1/chat/completions", chat("v-1"))[0] == 404
        status, _ = call(fake, "POST", "/v1/load_lora_adapter", {"lora_name": "v-1", "lora_path": "/a/v1"})
        assert status == 200
        status, body = call(fake, "POST", "/v1/chat/completions", chat("v-1", "what"))
        assert status == 200 and body["choices"][0]["message"]["content"] == "v-1 echoes: what"
        status, body = call(fake, "POST", "/v1/completions", {"model": "base", "prompt": "once"})
        assert status == 200 and body["choices"][0]["text"] == "base echoes: once"
        status, body = call(fake, "POST", "/v1/completions", {"model": "other", "prompt": "x"})
        assert status == 404 and body["error"]["param"] == "model"
        assert fake.completions == [("v-1", "/a/v1"), ("base", None)]
        cards = {c["id"]: c for c in call(fake, "GET", "/v1/models")[1]["data"]}
        assert cards["base"]["root"] == "/models/base" and cards["v-1"]["parent"] == "base"


def test_accept_any_model_answers_unknown_names() -> None:
    with FakeVLLM(accept_any_model=True) as fake:
        status, body = call(fake, "POST", "/v1/chat/completions", chat("adapter-v3"))
        assert status == 200 and body["model"] == "adapter-v3"
        assert fake.completions == [("adapter-v3", None)]


def test_the_api_key_guards_v1_routes_only() -> None:
    with FakeVLLM(api_key="sk-right", sleep_mode=True) as fake:
        assert call(fake, "GET", "/health")[0] == 200
        assert call(fake, "GET", "/is_sleeping")[0] == 200
        assert call(fake, "GET", "/v1/models")[0] == 401
        assert call(fake, "POST", "/v1/load_lora_adapter", {"lora_name": "a", "lora_path": "/a"})[0] == 401
        assert call(fake, "POST", "/v1/chat/completions", chat("stub-model"), key="sk-wrong")[0] == 401
        assert call(fake, "POST", "/v1/chat/completions", chat("stub-model"), key="sk-right")[0] == 200
        assert fake.adapters == {} and len(fake.completions) == 1


def test_queued_replies_come_before_reply_fn_and_reset_forgets_them() -> None:
    with FakeVLLM(replies=["queued"], reply_fn=lambda body: "from fn") as fake:
        texts = [call(fake, "POST", "/v1/chat/completions", chat("stub-model"))[1] for _ in range(2)]
        assert [t["choices"][0]["message"]["content"] for t in texts] == ["queued", "from fn"]
        fake.push("again")
        fake.fail_next(1, status=503)
        fake.reset()
        status, body = call(fake, "POST", "/v1/chat/completions", chat("stub-model"))
        assert status == 200 and body["choices"][0]["message"]["content"] == "from fn"
        assert fake.requests == [RecordedRequest("POST", "/v1/chat/completions", chat("stub-model"))]
        assert fake.completion_requests == fake.requests and fake.admin_requests() == []


def test_a_failing_reply_fn_is_a_500_not_a_hang() -> None:
    def broken(body: dict) -> str:
        raise RuntimeError("bad script")

    with FakeVLLM(reply_fn=broken) as fake:
        status, body = call(fake, "POST", "/v1/chat/completions", chat("stub-model"))
        assert status == 500 and "bad script" in body["error"]["message"]
        assert fake.completions == []
