"""Train tokens/s of dspylite's LoRA SFT vs a plain TRL SFTTrainer with TRL's defaults, same run.

    python bench/sft.py [--model DIR] [--rows 320] [--steps 24] [--batch-size 8]

Both train the same LoRA (same rank, targets, learning rate, batch size, steps) on the same Fact QA
SFT rows (prompt/completion chats rendered by the program's own adapter), each in a fresh
subprocess so thread settings and peak memory (RSS) are measured separately. The baseline is
``SFTTrainer(model, args=SFTConfig(...), peft_config=...)`` with TRL's defaults, made CPU-safe
(bf16 off on a machine without a GPU). Both put the loss on completion tokens only (TRL's default
for prompt/completion rows), and both report the same held-out completion-token loss at the end.

The last line is the key ratio and the target; the exit code is 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 1.3
# Speed only counts at an equal outcome: held-out completion loss within this fraction of TRL's.
LOSS_TOLERANCE = 0.15
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def make_data(rows: int, out: Path) -> Path:
    """Fact QA traces from an oracle scripted LM (gold outputs through the real ChatAdapter) -> SFT rows."""
    import datasets

    import dspylite as dspy
    from dspylite.datasets import fact_qa_metric, load_fact_qa
    from dspylite.datasets.programs import FactQA
    from dspylite.evaluate import run_one
    from dspylite.utils.dummy_lm import DummyLM
    from finetune.data import build_sft_data

    examples = load_fact_qa(seed=1, n_train=(rows + 1) // 2 + 32, n_dev=0, n_test=0)["train"]
    results = []
    for example in examples:
        lm = DummyLM([{"fact": example.fact}, {"answer": example.answer}], model="oracle")
        with dspy.context(lm=lm):
            results.append(run_one(FactQA(), example, fact_qa_metric, keep_traces=True))
    datasets.disable_progress_bars()
    data = build_sft_data(results, val_fraction=0.1, seed=0)
    data.train = data.train[:rows]
    data.val = data.val[:32]
    data.save(out)
    return out


def child(kind: str, model: str, data_dir: str, steps: int, batch_size: int, out_dir: str) -> dict:
    """Runs in a subprocess: train and report tokens/s, losses and peak RSS as JSON."""
    import resource

    from finetune.data import SFTData

    data = SFTData.load(data_dir)
    lr, rank, alpha = 1e-3, 16, 32
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    if kind == "trl-1thread":
        import torch

        torch.set_num_threads(1)
    if kind == "dspylite":
        from finetune.config import FinetuneConfig, LoraSettings
        from finetune.sft import build_sft_trainer

        cfg = FinetuneConfig(
            max_steps=steps,
            per_device_train_batch_size=batch_size,
            learning_rate=lr,
            lora=LoraSettings(r=rank, alpha=alpha, target_modules=targets),
            save_steps=10**6,
            logging_steps=max(1, steps // 4),
            tensorboard=False,
        )
        setup = build_sft_trainer(data, cfg, out_dir, model_path=model)
        trainer, val = setup.trainer, data.to_datasets()["val"].select_columns(["prompt", "completion"])
    else:
        import torch
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import SFTConfig, SFTTrainer

        splits = data.to_datasets()
        train = splits["train"].select_columns(["prompt", "completion"])
        val = splits["val"].select_columns(["prompt", "completion"])
        cpu = not torch.cuda.is_available()
        args = SFTConfig(
            output_dir=out_dir,
            max_steps=steps,
            per_device_train_batch_size=batch_size,
            learning_rate=lr,
            include_num_input_tokens_seen="non_padding",
            # the CPU-safety changes, nothing else
            bf16=not cpu,
            use_cpu=cpu,
        )
        trainer = SFTTrainer(
            model=AutoModelForCausalLM.from_pretrained(model),
            args=args,
            train_dataset=train,
            processing_class=AutoTokenizer.from_pretrained(model),
            peft_config=LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, task_type="CAUSAL_LM"),
        )
    import torch

    started = time.perf_counter()
    output = trainer.train()
    wall = time.perf_counter() - started
    tokens = trainer.state.num_input_tokens_seen
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    held_out = trainer.evaluate(eval_dataset=val)["eval_loss"]
    return {
        "kind": kind,
        "tokens": int(tokens),
        "train_runtime": output.metrics["train_runtime"],
        "wall": round(wall, 2),
        "tokens_per_second": tokens / output.metrics["train_runtime"],
        "train_loss": output.metrics.get("train_loss"),
        "last_logged_loss": losses[-1] if losses else None,
        "held_out_completion_loss": held_out,
        "torch_threads": torch.get_num_threads(),
        "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_child(kind: str, args: argparse.Namespace, data_dir: Path, work: Path) -> dict:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)  # each side picks its own thread count: TRL/torch's default vs ours
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = work / kind
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--model",
        args.model,
        "--data",
        str(data_dir),
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{kind} run failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="base model directory (default: the tiny model)")
    parser.add_argument("--rows", type=int, default=320, help="SFT rows to train on")
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps per trainer")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per step (both trainers)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the two runs this many times")
    parser.add_argument(
        "--no-equal-threads",
        dest="equal_threads",
        action="store_false",
        help="skip the extra TRL run pinned to one thread (it separates the thread effect)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        import logging

        logging.disable(logging.WARNING)
        print(json.dumps(child(args.child, args.model, args.data, args.steps, args.batch_size, args.out)))
        return 0

    if args.model is None:
        from sources.models.tiny_model import build_tiny_model

        args.model = str(build_tiny_model())
    work = Path(tempfile.mkdtemp(prefix="bench-sft-"))
    data_dir = make_data(args.rows, work / "data")
    kinds = ("trl", "trl-1thread", "dspylite") if args.equal_threads else ("trl", "dspylite")
    results = {kind: [] for kind in kinds}
    for _ in range(args.repeats):
        for kind in kinds:
            results[kind].append(run_child(kind, args, data_dir, work))

    print(f"model: {args.model}")
    print(
        "trl = SFTTrainer with TRL's defaults (bf16 off on CPU); trl-1thread = the same pinned to 1 torch thread"
    )
    print(f"data: {args.rows} Fact QA rows, {args.steps} steps x batch {args.batch_size}, same LoRA and lr")
    print(
        "| trainer | tokens/s | train tokens | threads | grad ckpt | peak RSS MB | held-out completion loss |"
    )
    print("|---|---|---|---|---|---|---|")
    best = {}
    for kind, runs in results.items():
        best[kind] = max(runs, key=lambda r: r["tokens_per_second"])
        for r in runs:
            print(
                f"| {kind} | {r['tokens_per_second']:.0f} | {r['tokens']} | {r['torch_threads']} | "
                f"{r['gradient_checkpointing']} | {r['peak_rss_mb']:.0f} | {r['held_out_completion_loss']:.4f} |"
            )
    ratio = best["dspylite"]["tokens_per_second"] / best["trl"]["tokens_per_second"]
    loss_gap = abs(best["dspylite"]["held_out_completion_loss"] - best["trl"]["held_out_completion_loss"])
    loss_gap /= max(1e-9, best["trl"]["held_out_completion_loss"])
    print(
        f"held-out completion-token loss: dspylite {best['dspylite']['held_out_completion_loss']:.4f} vs "
        f"TRL {best['trl']['held_out_completion_loss']:.4f} ({loss_gap:.1%} apart)"
    )
    same_loss = loss_gap <= LOSS_TOLERANCE
    if not same_loss:
        print(f"losses differ by more than {LOSS_TOLERANCE:.0%}: the speed ratio does not count")
    ok = ratio >= TARGET and same_loss
    print(f"train tokens/s ratio dspylite/TRL: {ratio:.2f}x (target >= {TARGET}x) {'OK' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
