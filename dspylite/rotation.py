"""Which of several equivalent endpoints are in rotation: shared by a serving handle and its LM clients.

Several vLLM servers serve one base model as one backend. When one of them cannot load an adapter
version (or cannot be reached), the serving handle takes it out of rotation; every LM client made from
that handle (and every copy of one) then stops sending requests there, because they share this object:

    rotation = Rotation()
    lm = LM("v-3", api_base=[a, b]); lm.rotation = rotation     # what VLLMConnection.lm() does
    rotation.take_out(a, "cannot load v-3: ...")              # lm now sends to b only

Endpoints are compared as given (the handle and its LMs use the same normalized ``.../v1`` URLs).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

logger = logging.getLogger(__name__)


class Rotation:
    """The endpoints taken out of rotation, with the reason; thread-safe."""

    def __init__(self) -> None:
        self._out: dict[str, str] = {}
        self._lock = threading.Lock()

    def take_out(self, api_base: str, reason: str) -> None:
        """Stop sending requests to ``api_base`` (logged once as a warning naming it and why)."""
        with self._lock:
            if api_base in self._out:
                return
            self._out[api_base] = reason
        logger.warning("server %s is out of rotation: %s", api_base, reason)

    def put_back(self, api_base: str) -> None:
        """Send requests to ``api_base`` again (it was restarted or fixed)."""
        with self._lock:
            self._out.pop(api_base, None)

    def is_out(self, api_base: str) -> bool:
        return api_base in self._out

    def active(self, api_bases: Iterable[str]) -> list[str]:
        """``api_bases`` without the ones out of rotation, in their order."""
        out = self._out
        return [base for base in api_bases if base not in out]

    @property
    def out(self) -> dict[str, str]:
        """Endpoint -> why it is out of rotation."""
        with self._lock:
            return dict(self._out)

    def __repr__(self) -> str:
        return f"Rotation(out={sorted(self._out)!r})"
