"""SmolLM2-135M-Instruct zero-shot on the built-in tasks: what the real-model demo can be built on.

    python bench/smollm2_task.py [--n 50] [--threads 16] [--max-tokens 96] [--dtype auto] [--json out.json]
    python bench/smollm2_task.py --tasks asdiv,boolq,boolq-cot,gsm8k --n 20 --max-tokens 256

One vLLM server (the precision ``serving_dtype`` picks, unless --dtype), then for each task (default:
Fact QA, two modules, and Fact Topic, one module; or the public benchmarks' reference programs, with
``boolq-cot`` the ChainOfThought variant of BoolQ's Predict, ``asdiv-predict`` ASDiv without the
reasoning step) with the ChatAdapter and the JSONAdapter (``--adapters``)
(structured outputs): score on ``--n`` dev examples, parse-failure rate, calls/s at ``--threads``
concurrency, and prompt and completion lengths in tokens (median, p90, max; and how many completions
hit ``--max-tokens``), so the demo and the benchmark recipes can pick task, adapter and ``max_tokens``
from numbers. A measurement, not a pass/fail check.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dspylite import settings  # noqa: E402
from dspylite.adapters import ChatAdapter, JSONAdapter  # noqa: E402
from dspylite.datasets.fact_qa import fact_qa_metric, load_fact_qa  # noqa: E402
from dspylite.datasets.fact_topic import fact_topic_metric, load_fact_topic  # noqa: E402
from dspylite.datasets.programs import FactQA, FactTopic  # noqa: E402
from dspylite.evaluate import Evaluate  # noqa: E402
from serving import VLLMServer  # noqa: E402
from sources.models import SMOLLM2, resolve_model  # noqa: E402


def tasks(n: int, names: list[str]) -> dict[str, tuple[Any, list[Any], Any]]:
    chosen = {}
    for name in names:
        if name == "FactQA":
            chosen[name] = (FactQA, load_fact_qa(seed=0)["dev"][:n], fact_qa_metric)
        elif name == "FactTopic":
            chosen[name] = (FactTopic, load_fact_topic(seed=0)["dev"][:n], fact_topic_metric)
        else:  # a public benchmark's reference program on its dev split (data: sources.datasets)
            from dspylite.jobs.tasks import TaskSettings, load_task
            from dspylite.modules import ChainOfThought, Predict

            task = load_task(TaskSettings(name=name.split("-")[0], n_train=0, n_dev=n, n_test=0))
            factory = task.make_program
            if name == "boolq-cot":
                factory = lambda: ChainOfThought("passage, question -> answer: bool")  # noqa: E731
            elif name == "asdiv-predict":
                factory = lambda: Predict("question -> answer: float")  # noqa: E731
            chosen[name] = (factory, task.split("dev"), task.metric)
    return chosen


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))]) if ordered else 0.0


def measure(
    server: VLLMServer,
    n: int,
    threads: int,
    max_tokens: int,
    recorded: list[dict[str, Any]] | None = None,
    names: tuple[str, ...] = ("FactQA", "FactTopic"),
    timeout: float = 300.0,
    adapters: tuple[str, ...] = ("chat", "json"),
) -> list[dict[str, Any]]:
    rows = []
    for task, (program_cls, devset, metric) in tasks(n, list(names)).items():
        for adapter in [ChatAdapter() if a == "chat" else JSONAdapter() for a in adapters]:
            lm = server.lm(cache=False, max_tokens=max_tokens, temperature=0.0, timeout=timeout)
            evaluate = Evaluate(
                devset=devset,
                metric=metric,
                num_threads=threads,
                display_progress=False,
                raise_if_all_failed=False,  # a 100% parse-failure rate is a finding here, not an error
            )
            with settings.context(lm=lm, adapter=adapter):
                started = time.perf_counter()
                result = evaluate(program_cls(), return_traces=True)
                seconds = time.perf_counter() - started
            traces = result.traces
            if recorded is not None:  # a few raw server answers, for tests that check token alignment
                recorded += [
                    {
                        "task": task,
                        "adapter": adapter.name,
                        "predictor": t.predictor_name,
                        "messages": t.messages,
                        "completion": t.completion,
                        "prompt_token_ids": t.prompt_token_ids,
                        "completion_token_ids": t.completion_token_ids,
                        "finish_reason": t.finish_reason,
                    }
                    for t in traces
                    if t.finish_reason == "stop" and t.completion_token_ids
                ][:3]
            lengths = [len(t.completion_token_ids or []) for t in traces]
            prompts = [len(t.prompt_token_ids or []) for t in traces]
            parse_failures = result.error_counts.get("parse", 0)
            row = {
                "task": task,
                "adapter": adapter.name,
                "n": len(devset),
                "score": result.score,
                "parse_failures": parse_failures,
                "parse_failure_rate": parse_failures / len(devset),
                "errors": dict(result.error_counts),
                "calls": len(traces),
                "calls_per_s": len(traces) / seconds,
                "seconds": seconds,
                "completion_tokens_median": statistics.median(lengths) if lengths else 0,
                "completion_tokens_p90": percentile(lengths, 0.9),
                "completion_tokens_max": max(lengths, default=0),
                "prompt_tokens_median": statistics.median(prompts) if prompts else 0,
                "prompt_tokens_p90": percentile(prompts, 0.9),
                "prompt_tokens_max": max(prompts, default=0),
                "hit_max_tokens": sum(1 for t in traces if t.finish_reason == "length"),
                "sample_failure": next(
                    (r.error[:300] for r in result.results if r.error_kind == "parse" and r.error), None
                ),
            }
            rows.append(row)
            print(
                f"{task:<10} {adapter.name:<5} score {row['score']:5.1f}  parse fail {parse_failures:>3}/{len(devset)}"
                f"  {row['calls_per_s']:5.2f} calls/s  tokens med {row['completion_tokens_median']:.0f}"
                f" p90 {row['completion_tokens_p90']:.0f} max {row['completion_tokens_max']}"
                f" (hit max_tokens {row['hit_max_tokens']})  prompt med {row['prompt_tokens_median']:.0f}"
                f" max {row['prompt_tokens_max']}",
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=SMOLLM2)
    parser.add_argument("--n", type=int, default=50, help="dev examples per task")
    parser.add_argument("--threads", type=int, default=16, help="concurrent program runs")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds per request (a busy CPU queues them)"
    )
    parser.add_argument("--adapters", default="chat,json", help="comma-separated: chat, json")
    parser.add_argument(
        "--tasks",
        default="FactQA,FactTopic",
        help="comma-separated: FactQA, FactTopic, asdiv, asdiv-predict, boolq, boolq-cot, gsm8k",
    )
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--record", help="write a few raw traces (messages, token ids) per task/adapter here")
    args = parser.parse_args(argv)

    base = resolve_model(args.model)
    server = VLLMServer(base, served_model_name="smollm2", dtype=args.dtype, log_dir=tempfile.mkdtemp())
    server.start()
    print(f"model {Path(base).name}, dtype {server.dtype}, start {server.start_seconds:.1f} s", flush=True)
    try:
        recorded: list[dict[str, Any]] = []
        rows = measure(
            server,
            args.n,
            args.threads,
            args.max_tokens,
            recorded,
            tuple(args.tasks.split(",")),
            args.timeout,
            tuple(args.adapters.split(",")),
        )
    finally:
        server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps({"dtype": server.dtype, "rows": rows}, indent=2))
    if args.record:
        record = {
            "model": args.model,
            "dtype": server.dtype,
            "max_tokens": args.max_tokens,
            "traces": recorded,
        }
        Path(args.record).write_text(json.dumps(record, indent=1, ensure_ascii=False))
    print(
        "\n| task | adapter | score | parse failures | calls/s | completion tokens median / p90 / max "
        "| hit max_tokens | prompt tokens median / max |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['task']} | {r['adapter']} | {r['score']:.1f} | {r['parse_failures']}/{r['n']} | "
            f"{r['calls_per_s']:.2f} | {r['completion_tokens_median']:.0f} / {r['completion_tokens_p90']:.0f} / "
            f"{r['completion_tokens_max']} | {r['hit_max_tokens']} | "
            f"{r['prompt_tokens_median']:.0f} / {r['prompt_tokens_max']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
