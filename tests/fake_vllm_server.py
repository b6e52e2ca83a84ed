"""The one stand-in for vLLM's OpenAI server in tests (stdlib only, no model).

It speaks what the LM client and serving/ talk to, in vLLM's dialect:

* ``GET /health``; ``GET /v1/models`` (the base card with ``root``, adapter cards with ``parent``);
* ``POST /v1/chat/completions`` and ``POST /v1/completions`` for the base model AND every loaded
  adapter name (vLLM's 404 for other names, unless ``accept_any_model``). ``return_token_ids`` gives
  top-level ``prompt_token_ids`` for chat, per-choice ones for completions, and per-choice
  ``token_ids``; ``logprobs`` in each endpoint's shape; ``n`` choices; ``max_tokens`` cuts at that many
  words with ``finish_reason="length"``;
* ``POST /v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` with vLLM's status codes;
* sleep mode (``sleep_mode=True``, or ``VLLM_SERVER_DEV_MODE=1`` with ``--enable-sleep-mode`` as a
  process): vLLM's dev endpoints ``POST /sleep?level=N``, ``POST /wake_up`` and ``GET /is_sleeping``
  with the real server's bodies. As in vLLM 0.32, level 1 keeps the runtime-loaded LoRA adapters
  (their weights are offloaded with the model's and restored on wake-up; the frontend keeps their
  names), and completions sent while asleep wait until wake-up. Level 2 discards the weights; the fake
  models the adapters' lost state by forgetting them. ``drop_adapters_on_sleep=True`` makes level 1
  forget them too, so tests can exercise a client's reload path.

Replies come from a queue (``push``), else from ``reply_fn(body)``, else the default
``"<model> echoes: <last user message or prompt>"``, which says both which model answered and to
what. Faults can be injected on completion requests: fail the next N with a status, delay them, or
drop the connection without an answer. Every request is recorded in ``requests``
(``RecordedRequest``), and every completion served in ``completions`` as (model, adapter path or None
for the base), so a test can assert what vLLM was asked and which weights answered.

As with vLLM, an ``api_key`` guards the ``/v1`` routes only (``/health`` and the dev endpoints stay open).

    with FakeVLLM(replies=["hello"]) as server:
        lm = LM("stub-model", api_base=server.api_base)

Run in a thread (``FakeVLLM(...).start()`` or ``with``) or as a process with vLLM's command-line flags
(what ``VLLMServer`` launches when a test points ``entrypoint_argv`` at this file). As a process it
also spawns a sleeping child, like vLLM's engine workers, so tests can check the whole group is
stopped. Setting ``FAKE_VLLM_FAIL=message`` makes the process log the message and exit 1 during
start-up; ``FAKE_VLLM_STARTUP_S`` sets how long it takes to come up.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ReplyFn = Callable[[dict[str, Any]], str]

COMPLETION_PATHS = ("/v1/chat/completions", "/v1/completions")
ADMIN_PATHS = ("/v1/load_lora_adapter", "/v1/unload_lora_adapter")
# vLLM's paused scheduler holds requests until wake-up; a test that forgets to wake it fails, not hangs.
ASLEEP_WAIT_S = 30.0


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # with its query string, as sent
    body: Any  # the parsed JSON body; None for a GET or a body that is not JSON
    # Left out of ==, so a test can compare with RecordedRequest(method, path, body).
    headers: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass
class _Fault:
    kind: str  # "status" | "close" | "delay"
    status: int = 500
    message: str = "injected failure"
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def fake_token_ids(text: str, offset: int = 1000) -> list[int]:
    """One fake token per whitespace-separated word, with stable ids."""
    return [offset + (sum(map(ord, word)) % 5000) for word in text.split()]


def fake_logprobs(count: int) -> list[float]:
    return [-0.1 * (i + 1) for i in range(count)]


def default_reply(body: dict[str, Any]) -> str:
    """What the fake answers when no reply was queued and no reply_fn given."""
    if "messages" in body:
        users = [m for m in body["messages"] if m.get("role") == "user"]
        content = users[-1].get("content") if users else ""
    else:
        content = body.get("prompt", "")
    return f"{body.get('model')} echoes: {content}"


class FakeVLLM:
    """A threaded fake vLLM bound at construction (so ``port`` is known); use as a context manager."""

    def __init__(
        self,
        model: str = "stub-model",
        *,
        replies: Iterable[str] = (),
        reply_fn: ReplyFn | None = None,
        served_model_name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        lora_modules: dict[str, str] | None = None,
        sleep_mode: bool = False,
        drop_adapters_on_sleep: bool = False,
        accept_any_model: bool = False,
    ):
        self.model = model
        self.name = served_model_name or model
        self.reply_fn = reply_fn
        self.api_key = api_key
        self.accept_any_model = accept_any_model
        self.adapters: dict[str, str] = dict(lora_modules or {})
        self.requests: list[RecordedRequest] = []
        # (model, adapter path or None for the base) of every completion served, in order
        self.completions: list[tuple[str, str | None]] = []
        self.sleep_mode = sleep_mode
        self.drop_adapters_on_sleep = drop_adapters_on_sleep
        self.sleep_level = 0  # 0: awake
        self._awake = threading.Event()
        self._awake.set()
        self._replies: deque[str] = deque(replies)
        self._faults: deque[_Fault] = deque()
        self._in_flight = 0
        self.max_in_flight = 0  # the most delayed requests being answered at once
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._httpd = _make_server(self, host, port)
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FakeVLLM:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-vllm-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread (the process mode)."""
        self._httpd.serve_forever(poll_interval=0.05)

    def stop(self) -> None:
        if self._thread is None:
            self._httpd.server_close()
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._awake.set()  # release completions parked on a sleeping server
        # Keep-alive connections park handler threads on a read; closing the sockets releases them.
        with self._lock:
            open_sockets = list(self._sockets)
            self._sockets.clear()
        for sock in open_sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)
        self._thread = None

    def __enter__(self) -> FakeVLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.url}/v1"

    # ---- scripting ----------------------------------------------------------------------------

    def push(self, *texts: str) -> None:
        """Queue reply texts, one per choice, served in order (before reply_fn and the default)."""
        with self._lock:
            self._replies.extend(texts)

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        message: str = "injected failure",
        headers: dict[str, str] | None = None,
    ) -> None:
        """The next ``count`` completion requests get ``status`` with an OpenAI-style error body."""
        with self._lock:
            self._faults.extend(
                _Fault("status", status=status, message=message, headers=headers or {}) for _ in range(count)
            )

    def close_next(self, count: int = 1) -> None:
        """The next ``count`` completion requests see the connection closed without an answer."""
        with self._lock:
            self._faults.extend(_Fault("close") for _ in range(count))

    def delay_next(self, count: int = 1, seconds: float = 1.0) -> None:
        """The next ``count`` completion requests are answered after ``seconds``."""
        with self._lock:
            self._faults.extend(_Fault("delay", delay_s=seconds) for _ in range(count))

    def reset(self) -> None:
        """Forget queued replies, pending faults and what was recorded (adapters stay loaded)."""
        with self._lock:
            self._replies.clear()
            self._faults.clear()
            self.requests.clear()
            self.completions.clear()

    # ---- what was asked -----------------------------------------------------------------------

    @property
    def completion_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.partition("?")[0] in COMPLETION_PATHS]

    def admin_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path in ADMIN_PATHS]

    def models_body(self) -> dict[str, Any]:
        def card(name: str, root: str, parent: str | None) -> dict[str, Any]:
            return {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "vllm",
                "root": root,
                "parent": parent,
            }

        with self._lock:
            adapters = list(self.adapters.items())
        cards = [card(self.name, self.model, None)]
        cards += [card(name, path, self.name) for name, path in adapters]
        return {"object": "list", "data": cards}

    # ---- behaviour (called from handler threads) ----------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _next_fault(self) -> _Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _serves(self, model: Any) -> bool:
        with self._lock:
            return self.accept_any_model or model == self.name or model in self.adapters

    def _reply_text(self, body: dict[str, Any]) -> str:
        with self._lock:
            if self._replies:
                return self._replies.popleft()
        if self.reply_fn is not None:
            return self.reply_fn(body)
        return default_reply(body)

    def _completion(self, body: dict[str, Any], chat: bool) -> dict[str, Any]:
        n = int(body.get("n") or 1)
        max_tokens = body.get("max_tokens")
        want_ids = bool(body.get("return_token_ids"))
        if chat:
            prompt_text = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
            want_logprobs = bool(body.get("logprobs"))
        else:
            prompt_text = str(body.get("prompt", ""))
            want_logprobs = body.get("logprobs") is not None
        prompt_ids = fake_token_ids(prompt_text)
        choices = []
        completion_tokens = 0
        for index in range(n):
            text = self._reply_text(body)
            words = text.split()
            finish = "stop"
            if isinstance(max_tokens, int) and len(words) > max_tokens:
                text, finish = " ".join(words[:max_tokens]), "length"
            ids = fake_token_ids(text)
            completion_tokens += len(ids)
            logprob_values = fake_logprobs(len(ids))
            if chat:
                choice: dict[str, Any] = {
                    "index": index,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                    "logprobs": None,
                }
                if want_logprobs:
                    choice["logprobs"] = {
                        "content": [
                            {"token": w, "logprob": lp, "bytes": list(w.encode()), "top_logprobs": []}
                            for w, lp in zip(text.split(), logprob_values, strict=True)
                        ]
                    }
            else:
                choice = {"index": index, "text": text, "finish_reason": finish, "logprobs": None}
                if want_logprobs:
                    choice["logprobs"] = {
                        "tokens": text.split(),
                        "token_logprobs": logprob_values,
                        "text_offset": [],
                        "top_logprobs": [],
                    }
                if want_ids:
                    choice["prompt_token_ids"] = prompt_ids
            if want_ids:
                choice["token_ids"] = ids
            choices.append(choice)
        response: dict[str, Any] = {
            "id": f"fake-{len(self.requests)}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": choices,
            "usage": {
                "prompt_tokens": len(prompt_ids),
                "completion_tokens": completion_tokens,
                "total_tokens": len(prompt_ids) + completion_tokens,
            },
        }
        if chat and want_ids:
            response["prompt_token_ids"] = prompt_ids
        return response

    def _load_adapter(self, body: dict[str, Any]) -> tuple[int, Any]:
        name = body.get("lora_name")
        with self._lock:
            if name in self.adapters or name == self.name:
                return 400, _error_body(f"The lora adapter '{name}' has already been loaded.", 400)
            self.adapters[name] = body.get("lora_path")
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    def _unload_adapter(self, body: dict[str, Any]) -> tuple[int, Any]:
        name = body.get("lora_name")
        with self._lock:
            if name not in self.adapters:
                return 404, _error_body(f"The lora adapter '{name}' cannot be found.", 404, "NotFoundError")
            del self.adapters[name]
        return 200, f"Success: LoRA adapter '{name}' removed successfully."

    def _sleep(self, query: str) -> tuple[int, Any]:
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        level = int(params.get("level", 1))
        if level not in (0, 1, 2):
            return 422, {"detail": "level must be between 0 and 2"}
        with self._lock:
            self._awake.clear()
            self.sleep_level = max(level, 1)
            if level == 2 or self.drop_adapters_on_sleep:
                self.adapters.clear()
        return 200, {"status": "sleeping", "level": level}

    def _wake_up(self) -> tuple[int, Any]:
        with self._lock:
            self.sleep_level = 0
            self._awake.set()
        return 200, {"status": "awake", "tags": None}


def _error_body(message: str, status: int, kind: str = "BadRequestError", param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def _make_server(fake: FakeVLLM, host: str, port: int) -> ThreadingHTTPServer:
    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 256  # the default backlog of 5 drops bursts of concurrent connects

        def process_request(self, request, client_address):
            with fake._lock:
                fake._sockets.add(request)
            super().process_request(request, client_address)

        def shutdown_request(self, request):
            with fake._lock:
                fake._sockets.discard(request)
            super().shutdown_request(request)

    return Server((host, port), _make_handler(fake))


def _make_handler(fake: FakeVLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like a real server
        # Headers and body go out in separate writes; without this, Nagle + delayed ACK add ~40 ms each.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # silence stderr access logs
            pass

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            text = isinstance(payload, str)
            data = (payload if text else json.dumps(payload)).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if text else "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            """vLLM's middleware: with a key, every /v1 route needs ``Authorization: Bearer <key>``."""
            if fake.api_key is None or not self.path.startswith("/v1"):
                return True
            if self.headers.get("Authorization") == f"Bearer {fake.api_key}":
                return True
            self._send(401, {"error": "Unauthorized"})
            return False

        def _not_found(self) -> None:
            self._send(404, _error_body(f"Not Found: {self.path}", 404, "NotFoundError"))

        def do_GET(self) -> None:
            fake._record(RecordedRequest("GET", self.path, None, dict(self.headers)))
            path = self.path.rstrip("/")
            if path == "/health":
                return self._send(200, "")
            if not self._authorized():
                return
            if path == "/v1/models":
                return self._send(200, fake.models_body())
            if path == "/is_sleeping" and fake.sleep_mode:
                return self._send(200, {"is_sleeping": fake.sleep_level > 0})
            self._not_found()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = None
            fake._record(RecordedRequest("POST", self.path, body, dict(self.headers)))
            path, _, query = self.path.partition("?")
            path = path.rstrip("/")
            if fake.sleep_mode and path == "/sleep":
                return self._send(*fake._sleep(query))
            if fake.sleep_mode and path == "/wake_up":
                return self._send(*fake._wake_up())
            if path in ADMIN_PATHS:
                if not self._authorized():
                    return
                if not isinstance(body, dict):
                    return self._send(400, _error_body("request body is not a JSON object", 400))
                handler = fake._load_adapter if path == "/v1/load_lora_adapter" else fake._unload_adapter
                return self._send(*handler(body))
            if path in COMPLETION_PATHS:
                return self._complete(body, chat=path == "/v1/chat/completions")
            self._not_found()

        def _complete(self, body: Any, chat: bool) -> None:
            fault = fake._next_fault()
            if fault is not None:
                if fault.kind == "close":
                    self.close_connection = True
                    return
                if fault.kind == "status":
                    error = _error_body(fault.message, fault.status, "InjectedError")
                    return self._send(fault.status, error, fault.headers)
                with fake._lock:
                    fake._in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake._in_flight)
                try:
                    time.sleep(fault.delay_s)
                finally:
                    with fake._lock:
                        fake._in_flight -= 1
            if not self._authorized():
                return
            if not isinstance(body, dict):
                return self._send(400, _error_body("request body is not a JSON object", 400))
            fake._awake.wait(timeout=ASLEEP_WAIT_S)
            model = body.get("model")
            if not fake._serves(model):
                message = f"The model `{model}` does not exist."
                return self._send(404, _error_body(message, 404, "NotFoundError", "model"))
            if chat and not isinstance(body.get("messages"), list):
                return self._send(400, _error_body("'messages' must be a list", 400, param="messages"))
            if not chat and not isinstance(body.get("prompt"), str):
                return self._send(400, _error_body("'prompt' must be a string", 400, param="prompt"))
            try:
                payload = fake._completion(body, chat)
            except Exception as exc:  # a broken reply_fn should show up as a 500, not hang the client
                error = _error_body(f"fake reply failed: {exc!r}", 500, "InternalServerError")
                return self._send(500, error)
            with fake._lock:
                fake.completions.append((model, fake.adapters.get(model)))
            self._send(200, payload)

    return Handler


# ---- process mode: what VLLMServer launches when a test points entrypoint_argv at this file --------


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name")
    parser.add_argument("--api-key")
    parser.add_argument("--enable-lora", action="store_true")
    parser.add_argument("--max-lora-rank", type=int)
    parser.add_argument("--max-loras", type=int)
    parser.add_argument("--lora-modules", nargs="*", default=[])
    parser.add_argument("--enable-sleep-mode", action="store_true")
    args, unknown = parser.parse_known_args(argv)
    print(f"fake vllm starting with {argv} (unknown: {unknown})", flush=True)
    failure = os.environ.get("FAKE_VLLM_FAIL")
    if failure:
        time.sleep(0.2)
        print(f"ERROR fake engine failed: {failure}", flush=True)
        sys.exit(1)
    print(
        f"env VLLM_ALLOW_RUNTIME_LORA_UPDATING={os.environ.get('VLLM_ALLOW_RUNTIME_LORA_UPDATING')}",
        flush=True,
    )
    for key in ("VLLM_SERVER_DEV_MODE", "CUDA_VISIBLE_DEVICES"):
        print(f"env {key}={os.environ.get(key)}", flush=True)
    # Like vLLM's engine worker: a child in the same process group.
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(f"worker pid {worker.pid}", flush=True)
    time.sleep(float(os.environ.get("FAKE_VLLM_STARTUP_S", "0.3")))
    modules = dict(item.split("=", 1) for item in args.lora_modules)
    fake = FakeVLLM(
        args.model,
        served_model_name=args.served_model_name,
        host=args.host,
        port=args.port,
        # Like vLLM: --api-key wins, else $VLLM_API_KEY (how VLLMServer passes it, off the argv).
        api_key=args.api_key or os.environ.get("VLLM_API_KEY") or None,
        lora_modules=modules,
        sleep_mode=args.enable_sleep_mode and os.environ.get("VLLM_SERVER_DEV_MODE") == "1",
    )
    print("fake vllm healthy", flush=True)
    fake.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
