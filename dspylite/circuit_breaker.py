"""A circuit breaker for one LM server: stop calling it after too many consecutive failures.

Without it a hung or broken server costs every call its full timeout times its attempts, and a job
over hundreds of examples runs for hours before it reports anything. After ``threshold`` consecutive
failed calls (each already retried by the LM) the breaker opens and every later call raises
``LMUnavailableError`` at once. One success in between resets the count: isolated failures are the
retries' business, not the breaker's.
"""

from __future__ import annotations

import logging
import threading

from dspylite.errors import LMUnavailableError

logger = logging.getLogger(__name__)


class CircuitBreaker:
    """Consecutive-failure counter for one server (``api_base``); thread-safe.

    ``threshold=None`` disables it (never opens).
    """

    def __init__(self, api_base: str, threshold: int | None):
        self.api_base = api_base
        self.threshold = threshold
        self.failures = 0
        self.last_error: str | None = None
        self._open = False
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._open

    def check(self) -> None:
        """Raise ``LMUnavailableError`` when open; called before every request attempt."""
        if self._open:
            raise self.unavailable_error()

    def record_success(self) -> None:
        with self._lock:
            self.failures = 0

    def record_failure(self, error: BaseException) -> None:
        with self._lock:
            self.failures += 1
            self.last_error = f"{type(error).__name__}: {error}"
            if self.threshold is not None and self.failures >= self.threshold and not self._open:
                self._open = True
                logger.error(
                    "LM server %s failed %d requests in a row; failing every further call fast "
                    "(last error: %s)",
                    self.api_base,
                    self.failures,
                    self.last_error,
                )

    def reset(self) -> None:
        """Close the breaker again (after the server was restarted or fixed)."""
        with self._lock:
            self.failures = 0
            self._open = False

    def unavailable_error(self) -> LMUnavailableError:
        return LMUnavailableError(
            f"LM server {self.api_base} is unavailable: {self.failures} requests in a row failed "
            f"(max_consecutive_failures={self.threshold}); last error: {self.last_error}. Check that "
            "the server is up and answering, then start the run again (or call lm.reset_breaker()).",
            api_base=self.api_base,
            failures=self.failures,
        )
