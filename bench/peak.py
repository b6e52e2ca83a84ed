"""This machine's attainable matmul FLOP/s per precision, and the FLOP counts the benches divide by it.

    python bench/peak.py [--threads 2] [--size 2048] [--seconds 2]

Every bench that reports a utilization (MFU) imports this module: ``measure_peaks`` runs a square
``torch.matmul`` (``size`` x ``size``, on the bench's own thread count) in float32 and bfloat16 for a
few seconds each and keeps the best window, so MFU = achieved FLOP/s / that figure. The reference is
the fastest precision this hardware runs *natively* (``serving.dtype.native_precisions``: float32
always; bfloat16 on a GPU that has it and on CPUs with AVX512-BF16 or AMX), so a CPU that could train
2.8x faster in bf16 than it does in fp32 shows that headroom as a low MFU.

The FLOP formulas (multiply + add = 2 FLOPs; N = the parameters of the linear layers a token passes
through, excluding the embedding lookup and the LM head, which are counted on their own):

* LoRA SFT, per row of S tokens of which K are completion (loss) tokens, base weights frozen:
  forward 2N + activation gradient 2N per token (no weight gradient for frozen weights) = 4N;
  LoRA adapters 6R per token (forward, activation and weight gradient; R = LoRA parameters);
  the LM head 4VH per *completion* token (the loss needs no logits elsewhere; a trainer that
  computes them anyway spends FLOPs this count does not credit); causal attention
  6 L d S(S+1)/2 per row (QK^T and AV forward 2 L d S(S+1), their gradients twice that), with d the
  query width (heads x head_dim).
* Serving one call (P prompt, C completion tokens; vLLM computes logits for sampled positions only):
  (2N + 2R) (P + C) + 2VH C + causal attention 2 L d T(T+1) with T = P + C.
* A GRPO update as ``rl.policy`` runs it (each distinct prompt once, its KV cache shared by its K
  completions; T = distinct prompt tokens + completion tokens): the reference pass (adapter off, no
  gradient) 2N T + 2VH C + attention, the policy pass forward + activation gradient 4N T + 6R T + 4VH C
  + 3 x attention; attention counts the prompts once and each completion against its prompt.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PEAK_DTYPES = ("float32", "bfloat16")
# The CPU features that decide which precision is fast here (printed by every bench).
FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# ---- the machine ----------------------------------------------------------------------------------------


def cpu_description(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """Model name, usable cores and the precision-relevant flags of this CPU."""
    from serving.dtype import cpu_flags, usable_cores

    name = "unknown"
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(usable_cores())
    flags = cpu_flags(cpuinfo)
    return {"model": name, "cores": cores, "flags": [f for f in FLAGS_OF_INTEREST if f in flags]}


def measure_matmul(dtype: str, threads: int, size: int = 2048, seconds: float = 2.0) -> float:
    """FLOP/s of ``size`` x ``size`` matmuls in ``dtype`` on ``threads`` torch threads: the best of
    ~0.25 s windows over ``seconds`` (the attainable rate, not the average on a busy machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(size, size).to(getattr(torch, dtype))
        b = torch.randn(size, size).to(getattr(torch, dtype))
        out = torch.empty(size, size, dtype=a.dtype)
        torch.matmul(a, b, out=out)  # first call: library and kernel set-up
        flops = 2.0 * size**3
        best, deadline = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started, n = time.perf_counter(), 0
            while True:
                torch.matmul(a, b, out=out)
                n += 1
                elapsed = time.perf_counter() - started
                if elapsed >= 0.25:
                    break
            best = max(best, n * flops / elapsed)
        return best
    finally:
        torch.set_num_threads(before)


@dataclass
class Peak:
    """Measured matmul FLOP/s per precision and which of them this hardware runs natively."""

    threads: int
    size: int
    flops: dict[str, float]  # dtype -> FLOP/s
    native: list[str]
    cpu: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"

    @property
    def reference(self) -> str:
        """The fastest native precision: what MFU is measured against."""
        return max(self.native, key=lambda d: self.flops.get(d, 0.0))

    @property
    def reference_flops(self) -> float:
        return self.flops[self.reference]

    def mfu(self, achieved_flops_per_s: float, dtype: str | None = None) -> float:
        """Utilization of the reference peak (or of ``dtype``'s peak when given)."""
        return achieved_flops_per_s / self.flops[dtype or self.reference]

    def best_of(self, other: Peak) -> Peak:
        """The higher figure per precision: benches measure before and after their runs, because a
        peak taken while other work shares the cores reads low (and an MFU against it high)."""
        flops = {
            d: max(self.flops.get(d, 0.0), other.flops.get(d, 0.0)) for d in {**self.flops, **other.flops}
        }
        return Peak(self.threads, self.size, flops, self.native, self.cpu, self.device)

    def lines(self) -> list[str]:
        cpu = self.cpu
        figures = ", ".join(
            f"{d} {_gflops(self.flops[d])} GFLOP/s{'' if d in self.native else ' (not native here)'}"
            for d in self.flops
        )
        return [
            f"cpu: {cpu.get('model', '?')}, {cpu.get('cores', '?')} cores, flags {' '.join(cpu.get('flags', [])) or '-'}"
            if self.device == "cpu"
            else f"device: {self.device}",
            f"peak ({self.size}x{self.size} matmul, {self.threads} threads): {figures}; "
            f"MFU reference: {self.reference} (the fastest native precision)",
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "threads": self.threads,
            "size": self.size,
            "flops": self.flops,
            "native": self.native,
            "reference": self.reference,
            "cpu": self.cpu,
            "device": self.device,
        }


def _gflops(flops: float) -> str:
    value = flops / 1e9
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def measure_peaks(
    threads: int, *, size: int = 2048, seconds: float = 2.0, dtypes: tuple[str, ...] = PEAK_DTYPES
) -> Peak:
    """``measure_matmul`` for each of ``dtypes`` on this CPU; ``native`` from ``serving.dtype``."""
    from serving.dtype import native_precisions

    native = [d for d in native_precisions(device="cpu") if d in dtypes]
    # A precision this CPU emulates runs a 2048-square matmul for tens of seconds: a smaller one says
    # as much (it is printed, never the MFU reference).
    flops = {
        d: measure_matmul(
            d, threads, size if d in native else min(size, 512), seconds if d in native else 0.5
        )
        for d in dtypes
    }
    return Peak(threads=threads, size=size, flops=flops, native=native, cpu=cpu_description())


# ---- the models -----------------------------------------------------------------------------------------


@dataclass
class ModelShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    inner: int
    vocab: int

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> ModelShape:
        config = json.loads((Path(model_dir) / "config.json").read_text())
        hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        return cls(
            hidden=hidden,
            layers=int(config["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            inner=int(config.get("intermediate_size") or 4 * hidden),
            vocab=int(config["vocab_size"]),
        )

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one decoder layer, by the Llama module names."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {
            "q_proj": (self.hidden, q),
            "k_proj": (self.hidden, kv),
            "v_proj": (self.hidden, kv),
            "o_proj": (q, self.hidden),
            "gate_proj": (self.hidden, self.inner),
            "up_proj": (self.hidden, self.inner),
            "down_proj": (self.inner, self.hidden),
        }

    @property
    def body_params(self) -> int:
        """N: the decoder layers' linear weights (what every token multiplies through)."""
        return self.layers * sum(i * o for i, o in self.linear_shapes().values())

    @property
    def head_params(self) -> int:
        return self.vocab * self.hidden

    def lora_params(self, rank: int, targets: tuple[str, ...] | list[str] = LLAMA_TARGETS) -> int:
        shapes = self.linear_shapes()
        wanted = shapes if list(targets) == ["all-linear"] else {t: shapes[t] for t in targets}
        return self.layers * sum(rank * (i + o) for i, o in wanted.values())

    def attention_forward(self, length: int) -> float:
        """Causal QK^T + AV FLOPs of one sequence of ``length`` tokens through every layer."""
        return 2.0 * self.layers * self.heads * self.head_dim * length * (length + 1)


def lora_sft_flops(shape: ModelShape, lengths: list[int], completion_tokens: int, lora_params: int) -> float:
    """FLOPs LoRA SFT needs for rows of ``lengths`` tokens holding ``completion_tokens`` loss tokens
    (the formula in this module's docstring)."""
    tokens = sum(lengths)
    return (
        (4.0 * shape.body_params + 6.0 * lora_params) * tokens
        + 4.0 * shape.head_params * completion_tokens
        + 3.0 * sum(shape.attention_forward(n) for n in lengths)
    )


def serving_call_flops(shape: ModelShape, prompt: int, completion: int, lora_params: int = 0) -> float:
    """FLOPs of one served call of ``prompt`` + ``completion`` tokens (the docstring's formula)."""
    return (
        (2.0 * shape.body_params + 2.0 * lora_params) * (prompt + completion)
        + 2.0 * shape.head_params * completion
        + shape.attention_forward(prompt + completion)
    )


def grpo_update_flops(
    shape: ModelShape, prompts: list[int], rows: list[tuple[int, int]], lora_params: int
) -> float:
    """FLOPs of one GRPO update: ``prompts`` = distinct prompt lengths, ``rows`` = (prompt length,
    completion length) per sample (the docstring's formula)."""
    tokens = sum(prompts) + sum(c for _, c in rows)
    completions = sum(c for _, c in rows)
    attention = sum(shape.attention_forward(p) for p in prompts) + sum(
        shape.attention_forward(p + c) - shape.attention_forward(p) for p, c in rows
    )
    reference = 2.0 * shape.body_params * tokens + 2.0 * shape.head_params * completions + attention
    policy = (
        (4.0 * shape.body_params + 6.0 * lora_params) * tokens
        + 4.0 * shape.head_params * completions
        + 3.0 * attention
    )
    return reference + policy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    peak = measure_peaks(args.threads, size=args.size, seconds=args.seconds)
    for line in peak.lines():
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(peak.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
