"""A stand-in for vLLM's OpenAI server, for unit tests of serving/ (stdlib only, no model).

It answers what serving/ talks to: ``GET /health``, ``GET /v1/models`` (base card with ``root``,
adapter cards with ``parent``), ``POST /v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` with
vLLM's status codes, and ``POST /v1/chat/completions`` echoing which model answered. Every request
is recorded, so a test can assert that vLLM was never asked.

Sleep mode (``sleep_mode=True``, or ``VLLM_SERVER_DEV_MODE=1`` with ``--enable-sleep-mode`` as a
process) adds vLLM's dev endpoints ``POST /sleep?level=N``, ``POST /wake_up`` and ``GET /is_sleeping``
with the real server's bodies. As in vLLM 0.32, level 1 keeps the runtime-loaded LoRA adapters (their
weights are offloaded with the model's and restored on wake-up; the frontend keeps their names), and
completions sent while asleep wait until wake-up. Level 2 discards the weights; the fake models the
adapters' lost state by forgetting them. ``drop_adapters_on_sleep=True`` makes level 1 forget them
too, so tests can exercise a client's reload path.

Run in a thread (``FakeVLLM(...).start()``) or as a process with vLLM's command-line flags (what
``VLLMServer`` launches when a test points ``entrypoint_argv`` at this file). As a process it also
spawns a sleeping child, like vLLM's engine workers, so tests can check the whole group is stopped.
Setting ``FAKE_VLLM_FAIL=message`` makes the process log the message and exit 1 during start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeVLLM:
    def __init__(
        self,
        model: str,
        *,
        served_model_name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        lora_modules: dict[str, str] | None = None,
        sleep_mode: bool = False,
        drop_adapters_on_sleep: bool = False,
    ):
        self.model = model
        self.name = served_model_name or model
        self.api_key = api_key
        self.adapters: dict[str, str] = dict(lora_modules or {})
        self.requests: list[tuple[str, str, Any]] = []
        # (model, adapter path or None for the base) of every completion served, in order
        self.completions: list[tuple[str, str | None]] = []
        self.sleep_mode = sleep_mode
        self.drop_adapters_on_sleep = drop_adapters_on_sleep
        self.sleep_level = 0  # 0: awake
        self._awake = threading.Event()
        self._awake.set()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), _handler(self))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeVLLM:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeVLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def admin_requests(self) -> list[tuple[str, str, Any]]:
        return [r for r in self.requests if "lora_adapter" in r[1]]

    def models_body(self) -> dict[str, Any]:
        cards = [{"id": self.name, "object": "model", "root": self.model, "parent": None}]
        cards += [
            {"id": n, "object": "model", "root": p, "parent": self.name} for n, p in self.adapters.items()
        ]
        return {"object": "list", "data": cards}


def _error(message: str, code: int) -> dict[str, Any]:
    return {"error": {"message": message, "type": "InvalidUserInput", "code": code}}


def _handler(fake: FakeVLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: Any) -> None:
            data = (json.dumps(body) if not isinstance(body, str) else body).encode()
            self.send_response(code)
            self.send_header(
                "Content-Type", "application/json" if not isinstance(body, str) else "text/plain"
            )
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if fake.api_key is None or not self.path.startswith("/v1"):
                return True
            return self.headers.get("Authorization") == f"Bearer {fake.api_key}"

        def do_GET(self) -> None:
            fake.requests.append(("GET", self.path, None))
            if self.path == "/health":
                return self._send(200, "")
            if not self._authorized():
                return self._send(401, {"error": "Unauthorized"})
            if self.path == "/v1/models":
                return self._send(200, fake.models_body())
            if self.path == "/is_sleeping" and fake.sleep_mode:
                return self._send(200, {"is_sleeping": fake.sleep_level > 0})
            self._send(404, _error("not found", 404))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            fake.requests.append(("POST", self.path, body))
            if not self._authorized():
                return self._send(401, {"error": "Unauthorized"})
            path, _, query = self.path.partition("?")
            if fake.sleep_mode and path in ("/sleep", "/wake_up"):
                return self._sleep_endpoint(path, query)
            with fake._lock:
                if self.path == "/v1/load_lora_adapter":
                    name = body.get("lora_name")
                    if name in fake.adapters or name == fake.name:
                        return self._send(
                            400, _error(f"The lora adapter '{name}' has already been loaded.", 400)
                        )
                    fake.adapters[name] = body.get("lora_path")
                    return self._send(200, f"Success: LoRA adapter '{name}' added successfully.")
                if self.path == "/v1/unload_lora_adapter":
                    name = body.get("lora_name")
                    if name not in fake.adapters:
                        return self._send(404, _error(f"The lora adapter '{name}' cannot be found.", 404))
                    del fake.adapters[name]
                    return self._send(200, f"Success: LoRA adapter '{name}' removed successfully.")
            if self.path == "/v1/chat/completions":
                # vLLM's paused scheduler holds requests until wake-up
                fake._awake.wait(timeout=30.0)
                model = body.get("model")
                if model != fake.name and model not in fake.adapters:
                    return self._send(404, _error(f"The model `{model}` does not exist.", 404))
                fake.completions.append((model, fake.adapters.get(model)))
                return self._send(
                    200,
                    {
                        "id": "fake",
                        "object": "chat.completion",
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": f"answered by {model}"},
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
                    },
                )
            self._send(404, _error("not found", 404))

        def _sleep_endpoint(self, path: str, query: str) -> None:
            with fake._lock:
                if path == "/sleep":
                    params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
                    level = int(params.get("level", 1))
                    if level not in (0, 1, 2):
                        return self._send(422, {"detail": "level must be between 0 and 2"})
                    fake._awake.clear()
                    fake.sleep_level = max(level, 1)
                    if level == 2 or fake.drop_adapters_on_sleep:
                        fake.adapters.clear()
                    return self._send(200, {"status": "sleeping", "level": level})
                fake.sleep_level = 0
                fake._awake.set()
                return self._send(200, {"status": "awake", "tags": None})

    return Handler


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
    fake._httpd.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main(sys.argv[1:])
