"""A small OpenAI-compatible HTTP server for tests (stdlib only).

It speaks enough of the protocol for the LM client: ``GET /v1/models``, ``POST /v1/chat/completions``
and ``POST /v1/completions``, in vLLM's dialect (``return_token_ids`` gives top-level
``prompt_token_ids`` for chat, per-choice ones for completions, and per-choice ``token_ids``).

Replies come from a queue (``push``) or from a function of the request (``reply_fn``); otherwise the
server echoes the last user message. Faults can be injected: fail the next N requests with a status,
delay them, or drop the connection without an answer. Every request is recorded in ``requests``.

    with StubOpenAIServer(replies=["hello"]) as server:
        lm = LM("stub-model", api_base=server.api_base)
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ReplyFn = Callable[[dict[str, Any]], str]


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None


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


class StubOpenAIServer:
    """Threaded stub server bound to 127.0.0.1 on a free port. Use as a context manager."""

    def __init__(
        self,
        replies: Iterable[str] = (),
        *,
        reply_fn: ReplyFn | None = None,
        models: Iterable[str] | None = ("stub-model",),
        api_key: str | None = None,
    ):
        self._replies: deque[str] = deque(replies)
        self.reply_fn = reply_fn
        # None accepts any model name (handy for adapter names); otherwise unknown names get vLLM's 404.
        self.models = None if models is None else set(models)
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self._faults: deque[_Fault] = deque()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()
        self.port: int | None = None

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> StubOpenAIServer:
        stub = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 256  # the default backlog of 5 drops bursts of concurrent connects

            def process_request(self, request, client_address):
                with stub._lock:
                    stub._sockets.add(request)
                super().process_request(request, client_address)

            def shutdown_request(self, request):
                with stub._lock:
                    stub._sockets.discard(request)
                super().shutdown_request(request)

        self._httpd = Server(("127.0.0.1", 0), _make_handler(self))
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"stub-openai-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        # Keep-alive connections park handler threads on a read; closing the sockets releases them.
        with self._lock:
            open_sockets = list(self._sockets)
            self._sockets.clear()
        for sock in open_sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> StubOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.url}/v1"

    # ---- scripting ----------------------------------------------------------------------------

    def push(self, *texts: str) -> None:
        """Queue reply texts, one per choice, served in order."""
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
        with self._lock:
            self._replies.clear()
            self._faults.clear()
            self.requests.clear()

    @property
    def completion_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST"]

    # ---- behaviour (called from handler threads) ----------------------------------------------

    def _next_fault(self) -> _Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _reply_text(self, body: dict[str, Any]) -> str:
        if self.reply_fn is not None:
            return self.reply_fn(body)
        with self._lock:
            if self._replies:
                return self._replies.popleft()
        if "messages" in body:
            users = [m for m in body["messages"] if m.get("role") == "user"]
            content = users[-1].get("content") if users else ""
        else:
            content = body.get("prompt", "")
        return f"echo: {content}"

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
            "id": f"stub-{len(self.requests)}",
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


def _error_body(message: str, status: int, kind: str = "BadRequestError", param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def _make_handler(stub: StubOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like a real server
        # Headers and body go out in separate writes; without this, Nagle + delayed ACK add ~40 ms each.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # silence stderr access logs
            pass

        def _send_json(
            self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
        ) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if stub.api_key is None:
                return True
            if self.headers.get("Authorization") == f"Bearer {stub.api_key}":
                return True
            self._send_json(401, _error_body("Invalid API key", 401, "AuthenticationError"))
            return False

        def do_GET(self) -> None:
            with stub._lock:
                stub.requests.append(RecordedRequest("GET", self.path, dict(self.headers), None))
            if not self._authorized():
                return
            if self.path.rstrip("/") == "/v1/models":
                names = sorted(stub.models) if stub.models is not None else ["stub-model"]
                self._send_json(
                    200,
                    {
                        "object": "list",
                        "data": [
                            {"id": name, "object": "model", "created": 0, "owned_by": "stub"}
                            for name in names
                        ],
                    },
                )
            elif self.path == "/health":
                self._send_json(200, {})
            else:
                self._send_json(404, _error_body(f"Not Found: {self.path}", 404, "NotFoundError"))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = None
            with stub._lock:
                stub.requests.append(RecordedRequest("POST", self.path, dict(self.headers), body))
            path = self.path.rstrip("/")
            if path not in ("/v1/chat/completions", "/v1/completions"):
                self._send_json(404, _error_body(f"Not Found: {self.path}", 404, "NotFoundError"))
                return
            fault = stub._next_fault()
            if fault is not None:
                if fault.kind == "close":
                    self.close_connection = True
                    return
                if fault.kind == "status":
                    self._send_json(
                        fault.status, _error_body(fault.message, fault.status, "InjectedError"), fault.headers
                    )
                    return
                time.sleep(fault.delay_s)
            if not self._authorized():
                return
            if not isinstance(body, dict):
                self._send_json(400, _error_body("request body is not a JSON object", 400))
                return
            model = body.get("model")
            if stub.models is not None and model not in stub.models:
                self._send_json(
                    404, _error_body(f"The model `{model}` does not exist.", 404, "NotFoundError", "model")
                )
                return
            chat = path == "/v1/chat/completions"
            if chat and not isinstance(body.get("messages"), list):
                self._send_json(400, _error_body("'messages' must be a list", 400, param="messages"))
                return
            if not chat and not isinstance(body.get("prompt"), str):
                self._send_json(400, _error_body("'prompt' must be a string", 400, param="prompt"))
                return
            try:
                payload = stub._completion(body, chat)
            except Exception as exc:  # a broken reply_fn should show up as a 500, not hang the client
                self._send_json(500, _error_body(f"stub reply failed: {exc!r}", 500, "InternalServerError"))
                return
            self._send_json(200, payload)

    return Handler
