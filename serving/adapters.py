"""Runtime LoRA load/unload against a running vLLM server.

Everything we can check ourselves is checked before vLLM is asked (the directory, the rank, the
base model, the name), because vLLM's errors come after the fact and do not name the file.
A name is never reloaded in place (DESIGN.md, invariant 2): vLLM would keep prefix-cache blocks
computed with the old weights, so a new version must get a new name.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import httpx

from dspylite.errors import AdapterRegistryError, ServingError
from serving.adapter_files import AdapterInfo, check_base_model, check_rank, read_adapter
from serving.registry import validate_name

logger = logging.getLogger(__name__)

_DEFAULT_TIMEOUT = 120.0


def normalize_api_base(api_base: str) -> str:
    """``http://host:port``, ``.../v1`` or ``.../v1/`` -> ``http://host:port/v1``."""
    base = api_base.strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ServingError(f"api_base {api_base!r} must start with http:// or https://")
    return base if base.endswith("/v1") else base + "/v1"


def server_root(api_base: str) -> str:
    """The server's root URL (where ``/health`` lives) for an OpenAI ``api_base``."""
    return normalize_api_base(api_base)[: -len("/v1")]


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def list_models(api_base: str, *, api_key: str | None = None, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The model cards from ``GET /v1/models``: the base model(s) plus every loaded adapter.

    vLLM marks an adapter card with ``parent`` (its base model's name); ``root`` is the path.
    """
    url = normalize_api_base(api_base) + "/models"
    response = _request("GET", url, api_key=api_key, timeout=timeout, what="list models")
    try:
        data = response.json()["data"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ServingError(f"GET {url} returned an unexpected body: {response.text[:300]!r}") from exc
    return [card for card in data if isinstance(card, dict)]


def base_model_card(cards: list[dict[str, Any]], api_base: str = "") -> dict[str, Any]:
    """The first card that is not an adapter."""
    for card in cards:
        if not card.get("parent"):
            return card
    raise ServingError(f"the server at {api_base or 'the given api_base'} lists no base model")


def load_adapter(
    api_base: str,
    name: str,
    path: str | os.PathLike[str],
    *,
    max_lora_rank: int | None = None,
    base_model: str | None = None,
    api_key: str | None = None,
    timeout: float = _DEFAULT_TIMEOUT,
) -> AdapterInfo:
    """Validate the adapter at ``path`` and load it into the server under ``name``.

    ``base_model`` is what the server runs (a path or hub id); when omitted it is read from the
    server's ``/v1/models`` (the base card's ``root``). Raises ``AdapterRegistryError`` for a bad
    adapter or a taken name, ``ServingError`` when the server cannot be reached or refuses.
    Returns what the adapter directory declares (rank, base model, absolute path).
    """
    validate_name(name)
    info = read_adapter(path, name=name)
    check_rank(info, max_lora_rank, name=name)
    cards = list_models(api_base, api_key=api_key)
    base = base_model_card(cards, api_base)
    check_base_model(info, base_model or base.get("root") or base.get("id"), name=name)
    taken = {card.get("id") for card in cards}
    if name in taken:
        what = "the served base model's name" if name == base.get("id") else "an adapter already loaded"
        raise AdapterRegistryError(
            f"adapter name {name!r} (path {info.path!r}) is {what} on {normalize_api_base(api_base)}; "
            "adapter versions are immutable and never reloaded in place: load the new version under a "
            "new name (AdapterRegistry.next_version_name)"
        )
    url = normalize_api_base(api_base) + "/load_lora_adapter"
    started = time.perf_counter()
    _request(
        "POST",
        url,
        api_key=api_key,
        timeout=timeout,
        json={"lora_name": name, "lora_path": info.path},
        what=f"load adapter {name!r} from {info.path!r}",
    )
    logger.info("loaded adapter %s from %s in %.2fs", name, info.path, time.perf_counter() - started)
    return info


def unload_adapter(
    api_base: str, name: str, *, api_key: str | None = None, timeout: float = _DEFAULT_TIMEOUT
) -> None:
    """Unload adapter ``name`` from the server. Raises ``AdapterRegistryError`` if it is not loaded."""
    url = normalize_api_base(api_base) + "/unload_lora_adapter"
    try:
        _request(
            "POST",
            url,
            api_key=api_key,
            timeout=timeout,
            json={"lora_name": name},
            what=f"unload adapter {name!r}",
        )
    except ServingError as exc:
        if getattr(exc, "status_code", None) == 404:
            raise AdapterRegistryError(
                f"adapter {name!r} is not loaded on {normalize_api_base(api_base)}, so it cannot be unloaded"
            ) from exc
        raise
    logger.info("unloaded adapter %s", name)


def _request(
    method: str, url: str, *, api_key: str | None, timeout: float, what: str, json: Any = None
) -> httpx.Response:
    try:
        response = httpx.request(method, url, headers=auth_headers(api_key), json=json, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ServingError(f"cannot {what}: {method} {url} failed ({type(exc).__name__}: {exc})") from exc
    if response.status_code >= 400:
        error = ServingError(
            f"cannot {what}: {method} {url} answered {response.status_code}: {_error_text(response)}"
        )
        error.status_code = response.status_code  # type: ignore[attr-defined]
        raise error
    return response


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and "message" in err:
            return str(err["message"])[:500]
        if "message" in body:
            return str(body["message"])[:500]
    return str(body)[:500]
