"""A handle on one or more OpenAI-compatible vLLM endpoints that serve the same base model.

``connect`` is for servers someone else started (no process ownership). ``VLLMServer`` extends
the same handle with the process it launched, ``serving.replicas.LocalReplicas`` with several. With
several endpoints, adapters are loaded on each of them (a round-robin client may send any request
anywhere) and checked in each one's ``/v1/models``, and ``lm()`` gives the dspylite LM client the whole
list (its ``api_base=[...]`` round-robins). An endpoint that cannot load a version is taken out of
rotation (``self.rotation``, shared with every LM made here): it gets no more requests or adapters.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import httpx

from dspylite.errors import AdapterRegistryError, ServingError
from dspylite.rotation import Rotation
from serving import adapters as _adapters
from serving.adapter_files import AdapterInfo, read_adapter

logger = logging.getLogger(__name__)


class VLLMConnection:
    """Health checks, model listing, adapter load/unload and LM clients for running endpoints."""

    def __init__(
        self,
        api_bases: list[str],
        *,
        api_key: str | None = None,
        max_lora_rank: int | None = None,
        base_model: str | None = None,
    ):
        if not api_bases:
            raise ServingError("at least one api_base is needed")
        self.api_bases = [_adapters.normalize_api_base(b) for b in api_bases]
        self.api_key = api_key
        self.max_lora_rank = max_lora_rank
        # What the server runs, for adapter base-model checks; read from /v1/models when None.
        self._base_model = base_model
        self._model_name: str | None = None
        # Adapters loaded through this handle (by name -> absolute path).
        self.loaded_adapters: dict[str, str] = {}
        # Endpoints taken out of rotation (a version failed to load there); shared with lm()'s clients.
        self.rotation = Rotation()

    # -- addresses --------------------------------------------------------------------------------

    @property
    def api_base(self) -> str:
        """The first endpoint's ``.../v1`` URL (the only one for a single server)."""
        return self.api_bases[0]

    @property
    def active_bases(self) -> list[str]:
        """The endpoints in rotation (all of them unless a version failed to load on some)."""
        return self.rotation.active(self.api_bases)

    def _first_active(self) -> str:
        active = self.active_bases
        if not active:
            raise ServingError(f"no server is left in rotation: {self.rotation.out}")
        return active[0]

    # -- health -----------------------------------------------------------------------------------

    def is_healthy(self, timeout: float = 2.0) -> bool:
        """Whether every endpoint in rotation answers ``GET /health`` with 200."""
        return all(self._endpoint_healthy(base, timeout) for base in self.active_bases)

    def _endpoint_healthy(self, api_base: str, timeout: float) -> bool:
        try:
            response = httpx.get(
                _adapters.server_root(api_base) + "/health",
                timeout=timeout,
                headers=_adapters.auth_headers(self.api_key),
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def wait_healthy(self, timeout: float = 60.0, interval: float = 0.5) -> None:
        """Block until every endpoint is healthy; ``ServingError`` naming the laggards on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            pending = [b for b in self.api_bases if not self._endpoint_healthy(b, timeout=2.0)]
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise ServingError(f"vLLM endpoint(s) {pending} not healthy after {timeout:.0f}s")
            time.sleep(interval)

    # -- models -----------------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        """Model cards (base + adapters) of the first endpoint in rotation."""
        return _adapters.list_models(self._first_active(), api_key=self.api_key)

    def served_models(self) -> list[str]:
        """Names a request may use as ``model``: the base model's and each loaded adapter's."""
        return [str(card.get("id")) for card in self.models()]

    def adapters(self) -> list[str]:
        """Names of the adapters the first endpoint in rotation currently serves."""
        return [str(card.get("id")) for card in self.models() if card.get("parent")]

    @property
    def model_name(self) -> str:
        """The base model's served name (what requests send as ``model``)."""
        if self._model_name is None:
            self._model_name = str(_adapters.base_model_card(self.models(), self.api_base)["id"])
        return self._model_name

    @property
    def base_model(self) -> str:
        """The base model's path or hub id, as the server loaded it."""
        if self._base_model is None:
            card = _adapters.base_model_card(self.models(), self.api_base)
            self._base_model = str(card.get("root") or card["id"])
        return self._base_model

    # -- adapters ---------------------------------------------------------------------------------

    def load_adapter(self, name: str, path: str | os.PathLike[str]) -> AdapterInfo:
        """Validate and load an adapter on every endpoint in rotation under a new name, then check that
        each one lists it in ``/v1/models`` before returning.

        An adapter refused as such (``AdapterRegistryError``: its directory, rank or base model, or a
        name already taken) is unloaded from the endpoints that took it, and the error raised, so the
        fleet stays uniform. An endpoint that fails on its own (unreachable, an error answer, the
        adapter missing from its model list) is taken out of rotation with a warning naming it; when
        no endpoint is left, ``ServingError`` names the adapter and every server's failure.
        """
        info = read_adapter(path, name=name)
        loaded: list[str] = []
        failed: dict[str, str] = {}
        for base in self.active_bases:
            try:
                _adapters.load_adapter(
                    base,
                    name,
                    info.path,
                    max_lora_rank=self.max_lora_rank,
                    base_model=self.base_model,
                    api_key=self.api_key,
                )
            except AdapterRegistryError:
                self._unload_quietly(name, loaded)
                raise
            except ServingError as exc:
                failed[base] = str(exc)
                continue
            loaded.append(base)
        for base in loaded:
            why = self._missing_adapter(base, name)
            if why is not None:
                failed[base] = why
        serving = [base for base in loaded if base not in failed]
        if not serving:
            self._unload_quietly(name, loaded)
            already_out = "".join(
                f"; {base}: out of rotation ({why})" for base, why in self.rotation.out.items()
            )
            raise ServingError(
                f"adapter {name!r} ({info.path}) could not be loaded on any server: "
                + "; ".join(f"{base}: {why}" for base, why in failed.items())
                + already_out
            )
        for base, why in failed.items():
            self.rotation.take_out(base, f"could not serve adapter {name!r}: {why}")
        self.loaded_adapters[name] = info.path
        return info

    def _missing_adapter(self, api_base: str, name: str) -> str | None:
        """Why ``api_base`` does not serve adapter ``name`` after loading it; None when it lists it."""
        try:
            served = {str(card.get("id")) for card in _adapters.list_models(api_base, api_key=self.api_key)}
        except ServingError as exc:
            return str(exc)
        return None if name in served else f"loaded {name!r}, but GET /v1/models does not list it"

    def _unload_quietly(self, name: str, api_bases: list[str]) -> None:
        for base in api_bases:
            try:
                _adapters.unload_adapter(base, name, api_key=self.api_key)
            except ServingError as undo_error:  # keep the original error; note the leftover
                logger.warning("could not roll back adapter %s on %s: %s", name, base, undo_error)

    def unload_adapter(self, name: str) -> None:
        """Unload an adapter from every endpoint in rotation (all are tried; the first failure is raised)."""
        first_error: ServingError | None = None
        for base in self.active_bases:
            try:
                _adapters.unload_adapter(base, name, api_key=self.api_key)
            except ServingError as exc:
                first_error = first_error or exc
        self.loaded_adapters.pop(name, None)
        if first_error is not None:
            raise first_error

    # -- sleep mode -------------------------------------------------------------------------------
    # vLLM's dev endpoints (server started with --enable-sleep-mode and VLLM_SERVER_DEV_MODE=1):
    # POST /sleep?level=N, POST /wake_up, GET /is_sleeping -> {"is_sleeping": bool}. Level 1 offloads
    # the weights (runtime-loaded LoRA adapters included) to CPU memory and drops the KV cache and
    # prefix cache; level 2 discards the weights. Requests sent while asleep wait (not served).

    def sleep(self, level: int = 1, timeout: float = 300.0) -> None:
        """Put every endpoint to sleep, freeing its accelerator memory for training."""
        if level not in (1, 2):
            raise ServingError(f"sleep level must be 1 (offload weights) or 2 (discard them), not {level}")
        for base in self.active_bases:
            self._sleep_call("POST", base, f"/sleep?level={level}", timeout, "put vLLM to sleep")
        logger.info("vLLM asleep (level %d) on %s", level, ", ".join(self.active_bases))

    def wake_up(self, timeout: float = 300.0) -> None:
        """Wake every endpoint (weights back on the device, KV cache reallocated)."""
        for base in self.active_bases:
            response = self._sleep_call("POST", base, "/wake_up", timeout, "wake vLLM up")
            status = _json_field(response, "status")
            if status not in (None, "awake"):
                raise ServingError(f"POST {base}/wake_up left the engine {status!r}, not awake")
        logger.info("vLLM awake on %s", ", ".join(self.active_bases))

    def is_sleeping(self, timeout: float = 10.0) -> bool:
        """Whether any endpoint is asleep."""
        answers = [
            _json_field(
                self._sleep_call("GET", base, "/is_sleeping", timeout, "ask vLLM if it sleeps"), "is_sleeping"
            )
            for base in self.active_bases
        ]
        return any(bool(a) for a in answers)

    def _sleep_call(self, method: str, api_base: str, path: str, timeout: float, what: str) -> httpx.Response:
        url = _adapters.server_root(api_base) + path
        try:
            return _adapters._request(method, url, api_key=self.api_key, timeout=timeout, what=what)
        except ServingError as exc:
            if getattr(exc, "status_code", None) == 404:
                raise ServingError(
                    f"cannot {what}: {url} does not exist. Sleep mode needs the server started with "
                    "--enable-sleep-mode and VLLM_SERVER_DEV_MODE=1 (VLLMServer(enable_sleep_mode=True)), "
                    "on a GPU build of vLLM"
                ) from exc
            raise

    # -- clients ----------------------------------------------------------------------------------

    def lm(self, model: str | None = None, **kwargs: Any) -> Any:
        """A ``dspylite.LM`` for the base model (or ``model``: an adapter name) on these endpoints; it
        (and its copies) sends nothing to an endpoint this handle takes out of rotation."""
        from dspylite.lm import LM

        if self.api_key is not None:
            kwargs.setdefault("api_key", self.api_key)
        api_base: str | list[str] = self.api_bases if len(self.api_bases) > 1 else self.api_base
        lm = LM(model or self.model_name, api_base=api_base, **kwargs)
        lm.rotation = self.rotation
        return lm

    def __repr__(self) -> str:
        return f"{type(self).__name__}(api_bases={self.api_bases!r})"


def _json_field(response: httpx.Response, field: str) -> Any:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get(field) if isinstance(body, dict) else None


def connect(
    api_base: str | list[str],
    *,
    api_key: str | None = None,
    max_lora_rank: int | None = None,
    check: bool = True,
    timeout: float = 10.0,
) -> VLLMConnection:
    """Attach to vLLM server(s) that are already running (nothing is started or stopped).

    With ``check`` (the default), waits up to ``timeout`` seconds for every endpoint to be healthy
    and verifies they serve the same base model, so a mis-typed port fails here, not mid-run.
    """
    bases = [api_base] if isinstance(api_base, str) else list(api_base)
    connection = VLLMConnection(bases, api_key=api_key, max_lora_rank=max_lora_rank)
    if check:
        connection.wait_healthy(timeout=timeout)
        names = {
            b: _adapters.base_model_card(_adapters.list_models(b, api_key=api_key), b)["id"]
            for b in connection.api_bases
        }
        if len(set(names.values())) > 1:
            raise ServingError(f"the endpoints serve different base models: {names}")
    return connection
