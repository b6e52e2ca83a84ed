"""The GPU check: one BootstrapFinetune-style LoRA SFT and a few GRPO policy steps on SmolLM2-135M,
on pre-recorded rows (bench/data/gpu_check.jsonl), printing tokens/s, peak memory and MFU.

Run through ``bench/gpu_check.sh`` (it installs the carried wheels first). vLLM does not run on the
GPU machine, so the GRPO steps train on pre-recorded rollouts (``rl.policy.Policy.update``), and the
SFT goes through the same ``finetune.sft.train_lora`` that BootstrapFinetune calls.

The model directory needs a config.json and the tokenizer; without weights (they do not fit the
64 MiB a device call carries) the model is built from its config with seeded random weights. Speed,
memory and MFU depend on the architecture and token counts only; the loss values then do not
describe the pretrained model, and the summary says which weights were used.

MFU counts matmul FLOPs per processed token: forward 2N, backward 2N (gradients flow back through
the frozen base to reach earlier LoRA layers; LoRA's own weight gradients are negligible), so 4N
with N the parameters used as matmuls (the embedding lookup excluded, the LM head included);
attention-score FLOPs are left out (a few % at these lengths). Peak: dense bf16 from the GPU's
datasheet (H100/H200 SXM: 989 TFLOP/s).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The repository root goes before bench/ (the script's folder, first on sys.path), whose serving.py
# would otherwise shadow the serving package.
sys.path.insert(0, str(ROOT))

DATA = Path(__file__).resolve().parent / "data" / "gpu_check.jsonl"
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}

logger = logging.getLogger("gpu_check")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint dir, or config + tokenizer only")
    parser.add_argument("--out", default="runs/gpu_check", help="work directory (adapters, summary.json)")
    parser.add_argument("--sft-steps", type=int, default=40)
    parser.add_argument("--sft-batch", type=int, default=32)
    parser.add_argument("--grpo-steps", type=int, default=4)
    parser.add_argument("--grpo-examples", type=int, default=16, help="examples per GRPO step (x4 rollouts)")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument(
        "--cpu-dry-run", action="store_true", help="fp32 on CPU, few steps: checks the script"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "datasets", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and not args.cpu_dry_run
    if not cuda and not args.cpu_dry_run:
        print("no CUDA device: run with --cpu-dry-run to check the script on CPU", file=sys.stderr)
        return 2
    started = time.perf_counter()
    summary: dict[str, Any] = {"environment": _environment(torch, cuda)}
    model_dir, weights = _model_dir(Path(args.model), out, torch)
    summary["model"] = {"dir": str(model_dir), "weights": weights}
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    peak_flops = _peak_flops(summary["environment"]) if cuda else None

    summary["sft"] = run_sft(model_dir, rows, out, args, cuda, peak_flops)
    summary["grpo"] = run_grpo(model_dir, rows, args, cuda, peak_flops)
    summary["wall_seconds"] = round(time.perf_counter() - started, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(_format(summary))
    return 0


# -- model ---------------------------------------------------------------------------------------------


def _model_dir(source: Path, out: Path, torch: Any) -> tuple[Path, str]:
    """``source`` itself when it holds weights; else a seeded random-init copy of its architecture."""
    if not (source / "config.json").is_file():
        raise SystemExit(f"{source} has no config.json; run bench/gpu_check_prepare.sh first")
    if any(source.glob("*.safetensors")):
        return source, "pretrained (from the directory)"
    from transformers import AutoConfig, AutoModelForCausalLM

    target = out / "model-random-init"
    if not (target / "model.safetensors").is_file():
        torch.manual_seed(0)
        config = AutoConfig.from_pretrained(source)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        target.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(target)
        for file in source.iterdir():
            if file.is_file() and file.name not in ("config.json",) and not file.name.startswith("model"):
                shutil.copy2(file, target / file.name)
    return target, "random init (seed 0) with the checkpoint's architecture and tokenizer"


def _matmul_params(model_dir: Path) -> int:
    from serving.memory import ModelShape

    shape = ModelShape.from_dir(model_dir)
    # embedding lookup is no matmul; a tied embedding is still used once as the LM head matmul
    return shape.params if shape.tied_embeddings else shape.params - shape.vocab * shape.hidden


# -- SFT -----------------------------------------------------------------------------------------------


def run_sft(model_dir: Path, rows: list[dict], out: Path, args: Any, cuda: bool, peak: float | None) -> dict:
    import torch
    from datasets import Dataset

    from finetune.config import FinetuneConfig, LoraSettings
    from finetune.sft import train_lora

    steps = 3 if args.cpu_dry_run else args.sft_steps
    batch = 4 if args.cpu_dry_run else args.sft_batch
    dataset = Dataset.from_list(
        [
            {"prompt": r["messages"], "completion": [{"role": "assistant", "content": r["completion"]}]}
            for r in rows
        ]
    )
    cfg = FinetuneConfig(
        lora=LoraSettings(r=args.lora_rank, alpha=2 * args.lora_rank, target_modules=["all-linear"]),
        learning_rate=2e-4,
        max_steps=steps,
        per_device_train_batch_size=batch,
        precision="bf16" if cuda else "fp32",
        tensorboard=False,
        save_steps=10_000,
        val_fraction=0.0,
        resume=False,
    )
    shutil.rmtree(out / "sft", ignore_errors=True)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = train_lora(dataset, cfg, out / "sft", adapter_name="gpu-check-sft", model_path=model_dir)
    metrics = result.metrics
    tokens_per_s = float(metrics.get("train_tokens_per_second") or 0.0)
    report = {
        "precision": cfg.precision,
        "steps": metrics.get("global_step"),
        "batch": batch,
        "train_tokens": metrics.get("train_tokens"),
        "tokens_per_second": round(tokens_per_s, 1),
        "first_loss": metrics.get("first_loss"),
        "last_loss": metrics.get("last_loss"),
        "wall_seconds": metrics.get("wall_seconds"),
        "adapter": result.path,
    }
    report.update(_memory_and_mfu(torch, cuda, tokens_per_s, _matmul_params(model_dir), peak))
    report["estimated_gib"] = _estimate(model_dir, args.lora_rank, batch, rows, cuda)
    return report


def _estimate(model_dir: Path, rank: int, batch: int, rows: list[dict], cuda: bool) -> float:
    """serving/memory.py's training estimate at the rows' mean length (no CUDA overhead term on CPU)."""
    from transformers import AutoTokenizer

    from serving.memory import GIB, ModelShape, training_memory

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lengths = [
        len(_chat_ids(tokenizer, r["messages"] + [{"role": "assistant", "content": r["completion"]}]))
        for r in rows[:64]
    ]
    seq_len = max(1, round(sum(lengths) / len(lengths)))
    estimate = training_memory(
        ModelShape.from_dir(model_dir),
        lora_rank=rank,
        batch_size=batch,
        seq_len=seq_len,
        dtype="bfloat16" if cuda else "float32",
        overhead_gib=1.0 if cuda else 0.0,
    )
    return round(estimate.total / GIB, 2)


def _chat_ids(tokenizer: Any, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    """Token ids of ``messages`` under the chat template (transformers 5 returns a BatchEncoding)."""
    encoded = tokenizer.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=True
    )
    return list(encoded["input_ids"])


# -- GRPO ----------------------------------------------------------------------------------------------


def run_grpo(model_dir: Path, rows: list[dict], args: Any, cuda: bool, peak: float | None) -> dict:
    import torch
    from transformers import AutoTokenizer

    from finetune.config import LoraSettings
    from rl.config import GRPOConfig
    from rl.groups import Sample, group_advantages
    from rl.policy import Policy

    steps = 2 if args.cpu_dry_run else args.grpo_steps
    per_step = 4 if args.cpu_dry_run else args.grpo_examples
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    eos = eos if isinstance(eos, int) and eos >= 0 else tokenizer.eos_token_id

    def samples_for(index: int, row: dict) -> list[Any]:
        prompt = _chat_ids(tokenizer, row["messages"], add_generation_prompt=True)
        rewards = [r["reward"] for r in row["rollouts"]]
        advantages = group_advantages(rewards)
        return [
            Sample(
                predictor_name="extract",
                example_key=str(index),
                call_index=0,
                rollout_id=k,
                reward=rollout["reward"],
                advantage=advantage,
                prompt_token_ids=prompt,
                completion_token_ids=tokenizer.encode(rollout["completion"], add_special_tokens=False)
                + [eos],
            )
            for k, (rollout, advantage) in enumerate(zip(row["rollouts"], advantages, strict=True))
        ]

    # Policy.load is the trainer's own path: grpo.device/grpo.precision "auto" pick cuda + bf16 on the GPU.
    cfg = dataclasses.replace(
        GRPOConfig(),
        beta=0.0,
        log_kl=False,
        num_iterations=1,
        lora=LoraSettings(r=args.lora_rank, alpha=2 * args.lora_rank, target_modules=["all-linear"]),
        device="auto" if cuda else "cpu",
        precision="auto" if cuda else "fp32",
    )
    policy = Policy.load(str(model_dir), cfg)
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    per_step_stats, processed, seconds = [], 0, 0.0
    for step in range(steps):
        chosen = order[step * per_step : (step + 1) * per_step]
        samples = [s for i in chosen for s in samples_for(i, rows[i])]
        # distinct prompts run once, then every completion: what the forward and backward process
        tokens = sum(len(rows_prompt) for rows_prompt in {tuple(s.prompt_token_ids) for s in samples})
        tokens += sum(len(s.completion_token_ids) for s in samples)
        tick = time.perf_counter()
        stats = policy.update(samples, temperature=1.0)
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - tick
        if step > 0 or steps == 1:  # the first step warms kernels and the allocator
            processed += tokens
            seconds += elapsed
        per_step_stats.append(
            {"loss": round(stats["loss"], 4), "seconds": round(elapsed, 3), "tokens": tokens}
        )
        logger.info("GRPO step %d: %s", step + 1, per_step_stats[-1])
    tokens_per_s = processed / seconds if seconds else 0.0
    report = {
        "precision": policy.train_dtype,
        "device": str(next(policy.model.parameters()).device),
        "steps": steps,
        "samples_per_step": per_step * 4,
        "tokens_per_second": round(tokens_per_s, 1),
        "timed_steps": max(1, steps - 1),
        "per_step": per_step_stats,
    }
    report.update(_memory_and_mfu(torch, cuda, tokens_per_s, _matmul_params(model_dir), peak))
    return report


# -- measurements --------------------------------------------------------------------------------------


def _environment(torch: Any, cuda: bool) -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for name in ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "pyarrow"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    env: dict[str, Any] = {"python": platform.python_version(), "versions": versions}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        env.update(
            device=torch.cuda.get_device_name(0),
            memory_gib=round(props.total_memory / 1024**3, 1),
            bf16=torch.cuda.is_bf16_supported(),
        )
    else:
        env["device"] = (
            f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads"
        )
    return env


def _peak_flops(env: dict[str, Any]) -> float | None:
    name = str(env.get("device", ""))
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


def _memory_and_mfu(torch: Any, cuda: bool, tokens_per_s: float, params: int, peak: float | None) -> dict:
    report: dict[str, Any] = {"flops_per_token": 4 * params}
    if cuda:
        report["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 1024**3, 2)
        report["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 1024**3, 2)
    if peak:
        report["mfu"] = round(4 * params * tokens_per_s / peak, 4)
    return report


def _format(summary: dict[str, Any]) -> str:
    env, sft, grpo = summary["environment"], summary["sft"], summary["grpo"]
    lines = [
        f"device: {env['device']}"
        + (f" ({env.get('memory_gib')} GiB, bf16 {env.get('bf16')})" if "memory_gib" in env else ""),
        "versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        f"model: {summary['model']['dir']} ({summary['model']['weights']})",
        "",
        "| phase | precision | steps | tokens/s | peak alloc GiB | estimate GiB | MFU | loss first -> last |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| SFT (train_lora, batch {sft['batch']}) | {sft['precision']} | {sft['steps']} | {sft['tokens_per_second']:,.0f} | "
        f"{sft.get('peak_memory_gib', 'n/a')} | {sft['estimated_gib']} | {_pct(sft.get('mfu'))} | "
        f"{_num(sft['first_loss'])} -> {_num(sft['last_loss'])} |",
        f"| GRPO (Policy.update, {grpo['samples_per_step']} samples/step) | {grpo['precision']} | {grpo['steps']} | "
        f"{grpo['tokens_per_second']:,.0f} | {grpo.get('peak_memory_gib', 'n/a')} | - | {_pct(grpo.get('mfu'))} | "
        f"{grpo['per_step'][0]['loss']} -> {grpo['per_step'][-1]['loss']} |",
        "",
        f"total wall time: {summary['wall_seconds']}s",
    ]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return f"{100 * value:.1f}%" if value is not None else "n/a"


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


if __name__ == "__main__":
    sys.exit(main())
