"""Seconds per GRPO step: dspylite (vLLM rollouts + own loss + adapter hot-swap) vs TRL's GRPOTrainer alone.

    python bench/grpo.py [--model DIR] [--steps 5] [--warmup 1] [--group-size 4] [--prompts 4]
                         [--max-tokens 64] [--threads 2]

Same run, same base model, same LoRA (rank, targets, learning rate), same prompts (the Fact Topic
program's messages rendered by the ChatAdapter), same group size, prompts per step, completion length
limit, temperature and KL weight. Each side runs in its own subprocess (thread settings and memory do
not leak between them), and the vLLM server is stopped before TRL runs, so TRL has the CPU to itself.

- dspylite: ``rl.trainer.GRPOTrainer`` on the program, sampling from vLLM, a step = rollout + train +
  sync (save the adapter version, register it, load it into vLLM, unload the stale one). Validation
  is left out of the step time (TRL's loop has none): val_every=0 and a 2-example valset.
- TRL: ``trl.GRPOTrainer(use_vllm=False)``: generation with ``model.generate`` inside the trainer.

The first ``--warmup`` steps of each side are not timed. The last line is the key ratio and the
target; the exit code is 1 when the target is missed.
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

TARGET = 0.5
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LORA = {
    "r": 16,
    "alpha": 32,
    "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
LEARNING_RATE = 1e-4
BETA = 0.04
TEMPERATURE = 1.0


def _prompts(n: int) -> tuple[list, list]:
    """Fact Topic examples and the exact chat messages the program sends for them."""
    from dspylite.adapters.chat import ChatAdapter
    from dspylite.datasets import load_fact_topic
    from dspylite.datasets.programs import ClassifyFactTopic

    examples = load_fact_topic(seed=3, n_train=n, n_dev=0, n_test=0)["train"]
    adapter = ChatAdapter()
    messages = [adapter.format(ClassifyFactTopic, [], {"sentence": ex.sentence}) for ex in examples]
    return examples, messages


def run_dspylite(model: str, args: argparse.Namespace, out: Path) -> dict:
    import dspylite
    from dspylite.datasets import fact_topic_metric
    from dspylite.datasets.programs import FactTopic
    from finetune.config import LoraSettings
    from rl.config import GRPOConfig
    from rl.trainer import GRPOTrainer
    from serving import Backend, VLLMServer

    steps = args.warmup + args.steps
    examples, _ = _prompts(args.prompts * steps + 2)
    trainset, valset = examples[:-2], examples[-2:]
    started = time.perf_counter()
    with VLLMServer(model, max_lora_rank=LORA["r"], log_dir=out / "server") as server:
        start_s = time.perf_counter() - started
        lm = server.lm(max_tokens=args.max_tokens)
        dspylite.configure(lm=lm)
        cfg = GRPOConfig(
            init_adapter="base",
            num_steps=steps,
            examples_per_step=args.prompts,
            num_rollouts_per_example=args.group_size,
            temperature=TEMPERATURE,
            learning_rate=LEARNING_RATE,
            beta=BETA,
            val_every=0,
            val_threads=2,
            threads=args.threads,
            lora=LoraSettings(r=LORA["r"], alpha=LORA["alpha"], target_modules=LORA["targets"]),
            tensorboard=False,
        )
        backend = Backend(server, run_dir=out / "run", model_dir=model, base_lm=lm)
        trainer = GRPOTrainer(cfg, fact_topic_metric, backend)
        trainer.fit(FactTopic(), trainset, valset)
    rows = [r for r in trainer.run.metrics() if r["step"] > args.warmup]
    return {
        "server_start_s": start_s,
        "steps": len(rows),
        "rollout_s": _mean(r["rollout_s"] for r in rows),
        "train_s": _mean(r["train_s"] for r in rows),
        "sync_s": _mean(r["sync_s"] for r in rows),
        "step_s": _mean(r["rollout_s"] + r["train_s"] + r["sync_s"] for r in rows),
        "completion_tokens_mean": _mean(r["completion_tokens_mean"] for r in rows),
        "updated_steps": sum(1 for r in rows if r.get("updated")),
    }


def run_trl(model: str, args: argparse.Namespace, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from dspylite.adapters.chat import ChatAdapter
    from dspylite.datasets import fact_topic_metric
    from dspylite.datasets.programs import ClassifyFactTopic
    from dspylite.errors import AdapterParseError

    torch.set_num_threads(args.threads)
    steps = args.warmup + args.steps
    examples, messages = _prompts(args.prompts * steps)
    dataset = Dataset.from_list(
        [{"prompt": m, "topic": ex.topic} for m, ex in zip(messages, examples, strict=True)]
    )
    adapter = ChatAdapter()

    def reward(prompts, completions, topic, **_):
        scores = []
        for completion, gold in zip(completions, topic, strict=True):
            text = completion[0]["content"] if isinstance(completion, list) else completion
            try:
                parsed = adapter.parse(ClassifyFactTopic, text)
            except AdapterParseError:
                scores.append(0.0)
                continue
            scores.append(fact_topic_metric({"topic": gold}, parsed))
        return scores

    class Timer(TrainerCallback):
        def __init__(self):
            self.begins, self.ends, self.lengths = [], [], []

        def on_step_begin(self, *_, **__):
            self.begins.append(time.perf_counter())

        def on_step_end(self, *_, **__):
            self.ends.append(time.perf_counter())

        def on_log(self, _args, _state, _control, logs=None, **__):
            if logs and "completions/mean_length" in logs:
                self.lengths.append(logs["completions/mean_length"])

    timer = Timer()
    config = GRPOConfig(
        output_dir=str(out / "trl"),
        per_device_train_batch_size=args.prompts * args.group_size,
        num_generations=args.group_size,
        max_completion_length=args.max_tokens,
        max_steps=steps,
        learning_rate=LEARNING_RATE,
        beta=BETA,
        temperature=TEMPERATURE,
        use_vllm=False,
        bf16=False,
        fp16=False,
        use_cpu=True,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        shuffle_dataset=False,
        dataloader_num_workers=0,
    )
    peft_config = LoraConfig(
        r=LORA["r"], lora_alpha=LORA["alpha"], target_modules=LORA["targets"], task_type="CAUSAL_LM"
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=config,
        train_dataset=dataset,
        peft_config=peft_config,
        callbacks=[timer],
    )
    trainer.train()
    times = [e - b for b, e in zip(timer.begins, timer.ends, strict=False)][args.warmup :]
    # on_step_begin fires after the generation of the step in some versions; time from end to end instead
    ends = timer.ends
    end_to_end = [ends[i] - ends[i - 1] for i in range(max(1, args.warmup), len(ends))]
    return {
        "steps": len(end_to_end),
        "step_s": _mean(end_to_end),
        "inner_step_s": _mean(times),
        "completion_tokens_mean": _mean(timer.lengths[args.warmup :]) if timer.lengths else None,
    }


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def _child(kind: str, model: str, args: argparse.Namespace, out: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--model",
        model,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--group-size",
        str(args.group_size),
        "--prompts",
        str(args.prompts),
        "--max-tokens",
        str(args.max_tokens),
        "--threads",
        str(args.threads),
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{kind} run failed with code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="model directory (default: the tiny model)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps per side")
    parser.add_argument("--group-size", type=int, default=4, help="completions per prompt (K)")
    parser.add_argument("--prompts", type=int, default=4, help="prompts (examples) per step")
    parser.add_argument("--max-tokens", type=int, default=64, help="completion length limit")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training (both sides)")
    parser.add_argument("--out", default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        out = Path(args.out)
        result = (
            run_dspylite(args.model, args, out)
            if args.child == "dspylite"
            else run_trl(args.model, args, out)
        )
        print(json.dumps(result))
        return 0

    if args.model is None:
        from sources.models.tiny_model import build_tiny_model

        args.model = str(build_tiny_model())
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-grpo-"))
    ours = _child("dspylite", args.model, args, out / "dspylite")
    trl = _child("trl", args.model, args, out / "trl")
    ratio = ours["step_s"] / trl["step_s"]
    print(f"model: {args.model}")
    print(
        f"group size {args.group_size}, prompts/step {args.prompts}, max completion tokens {args.max_tokens}, "
        f"timed steps {args.steps} (+{args.warmup} warm-up), torch threads {args.threads}"
    )
    print("| | s/step | rollout s | train s | sync s | completion tokens (mean) |")
    print("|---|---|---|---|---|---|")
    print(
        f"| dspylite (vLLM + LoRA hot-swap) | {ours['step_s']:.2f} | {ours['rollout_s']:.2f} | "
        f"{ours['train_s']:.2f} | {ours['sync_s']:.3f} | {ours['completion_tokens_mean']:.1f} |"
    )
    trl_len = trl["completion_tokens_mean"]
    print(
        f"| TRL GRPOTrainer (use_vllm=False) | {trl['step_s']:.2f} | - | - | - | {trl_len:.1f} |"
        if trl_len is not None
        else f"| TRL GRPOTrainer | {trl['step_s']:.2f} | - | - | - | ? |"
    )
    print(
        f"adapter sync per step: {ours['sync_s'] * 1000:.0f} ms (save + register + load by path + unload stale); "
        f"vLLM start {ours['server_start_s']:.0f} s (not in the step time)"
    )
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(f"grpo s/step dspylite/TRL = {ratio:.2f}x (target <= {TARGET}x): {verdict}")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
