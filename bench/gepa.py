"""GEPA side by side with DSPy 3.4.1's ``dspy.GEPA``: same server, task, metric, seed, budget and reflection LM.

    flock /tmp/vllm.lock python bench/gepa.py                 # builds/loads the tiny model and starts vLLM
    python bench/gepa.py --api-base http://127.0.0.1:8000/v1 --served-name tiny

Each library compiles the Fact QA program (extract the fact, then answer) with GEPA on the same
train/val split, with ``fact_qa_feedback_metric`` (the score is answer exact match; the feedback says
which sentence was copied wrong, garbled, or what format broke), ``max_metric_calls`` and seed, and the
same reflection LM: by default the tiny model itself on the same server (``--reflection tiny``), or a
scripted reflector (``--reflection scripted``) that appends a fixed rule to the instruction, so the
two searches see identical proposals. Reported per library: held-out dev score of the compiled
program (each library's own Evaluate), LM requests the server completed during the compile (vLLM's
/metrics counter, both sides counted the same way), metric calls, candidates, and compile wall time.

DSPy runs in its own venv (``.cache/bench-dspy-venv``, created like bench/optimizers.py does, with
``dspy==3.4.1``), through a subprocess of this file (``--worker dspy``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path and this very file would shadow the
# ``gepa`` package (as bench/serving.py would ``serving``): drop the folder, put the repository first.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))
DEFAULT_DSPY_VENV = ROOT / ".cache" / "bench-dspy-venv"
SCRIPTED_RULE = (
    "Copy the one context line that names the person in the question and states the asked relation, "
    "word for word; answer with the value from that line only."
)


def _bench_optimizers() -> Any:
    spec = importlib.util.spec_from_file_location("bench_optimizers", ROOT / "bench" / "optimizers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def settled_requests(bench: Any, api_base: str, timeout_s: float = 20.0) -> float | None:
    """vLLM's finished-request counter once it stops moving: /metrics lags the requests by a few
    seconds, which would undercount a compile that takes seconds."""
    last = bench.server_requests(api_base)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(2.0)
        now = bench.server_requests(api_base)
        if now == last:
            return now
        last = now
    return last


def scripted_reflection(prompt: str) -> str:
    """A deterministic reflector: the current instruction (first ``` block) plus a fixed rule."""
    current = prompt.split("```", 2)[1].strip() if prompt.count("```") >= 2 else ""
    if SCRIPTED_RULE in current:
        return f"```\n{current}\n```"
    return f"```\n{current} {SCRIPTED_RULE}\n```"


# ---- the dspylite half ---------------------------------------------------------------------------------


def run_dspylite(task: dict[str, Any]) -> dict[str, Any]:
    import dspylite as dspy
    from dspylite.datasets import fact_qa_feedback_metric, fact_qa_metric
    from dspylite.datasets.programs import FactQA
    from dspylite.lm import LM

    bench = _bench_optimizers()
    opts = task["options"]

    def examples(rows: list[dict[str, str]]) -> list[dspy.Example]:
        return [dspy.Example(**r).with_inputs("context", "question") for r in rows]

    train, val, dev = (examples(task[k]) for k in ("train", "val", "dev"))
    with tempfile.TemporaryDirectory() as tmp:
        lm = LM(
            f"openai/{task['served_name']}",
            api_base=task["api_base"],
            api_key="EMPTY",
            temperature=0.0,
            max_tokens=opts["max_tokens"],
            cache_dir=Path(tmp) / "cache",
        )
        if opts["reflection"] == "tiny":
            reflection_lm: Any = LM(
                f"openai/{task['served_name']}",
                api_base=task["api_base"],
                api_key="EMPTY",
                temperature=1.0,
                max_tokens=opts["reflection_max_tokens"],
                cache_dir=Path(tmp) / "cache",
            )
        else:
            reflection_lm = scripted_reflection
        dspy.configure(lm=lm)
        run_dir = Path(opts["run_dir"]) if opts.get("run_dir") else Path(tmp) / "run"
        gepa = dspy.GEPA(
            fact_qa_feedback_metric,
            reflection_lm=reflection_lm,
            max_metric_calls=opts["max_metric_calls"],
            reflection_minibatch_size=opts["minibatch"],
            use_merge=opts["use_merge"],
            num_threads=opts["num_threads"],
            seed=opts["seed"],
            run_dir=run_dir,
            progress=False,
        )
        before = settled_requests(bench, task["api_base"])
        start = time.perf_counter()
        program = gepa.compile(FactQA(), trainset=train, valset=val)
        wall = time.perf_counter() - start
        after = settled_requests(bench, task["api_base"])
        result = dspy.Evaluate(
            devset=dev, metric=fact_qa_metric, num_threads=opts["num_threads"], display_progress=False
        )(program)
    return {
        "score": result.score,
        "val_before": gepa.summary["score_before"],
        "val_after": gepa.summary["score_after"],
        "wall_s": wall,
        "server_calls": _diff(before, after),
        "own_calls": gepa.summary["lm_calls"],
        "metric_calls": gepa.summary["metric_calls"],
        "candidates": gepa.summary["candidates"],
        "instructions": {n: p.signature.instructions for n, p in program.named_predictors()},
    }


# ---- the DSPy half (runs in the DSPy venv) ---------------------------------------------------------------


def run_dspy(task: dict[str, Any]) -> dict[str, Any]:
    import dspy

    from dspylite.datasets.fact_qa import fact_qa_metric
    from dspylite.datasets.feedback import describe_answer, describe_fact_copy

    bench = _bench_optimizers()
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    opts = task["options"]
    lm = dspy.LM(
        f"openai/{task['served_name']}",
        api_base=task["api_base"],
        api_key="EMPTY",
        temperature=0.0,
        max_tokens=opts["max_tokens"],
        num_retries=3,
    )
    dspy.configure(lm=lm, max_errors=1_000_000)
    if opts["reflection"] == "tiny":
        reflection_lm: Any = dspy.LM(
            f"openai/{task['served_name']}",
            api_base=task["api_base"],
            api_key="EMPTY",
            temperature=1.0,
            max_tokens=opts["reflection_max_tokens"],
            num_retries=3,
        )
    else:
        reflection_lm = scripted_reflection

    def metric(gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None) -> Any:
        # The same words as dspylite.datasets.fact_qa_feedback_metric, as a dspy.Prediction.
        score = fact_qa_metric(gold, pred) if pred is not None else 0.0
        fact = describe_fact_copy(gold.context, getattr(pred, "fact", None), gold.fact)
        answer = describe_answer(getattr(pred, "answer", None), gold.answer)
        if pred_name and "extract" in pred_name:
            feedback = fact
        elif pred_name and "answer" in pred_name:
            feedback = answer
        else:
            feedback = f"{fact} {answer}"
        return dspy.Prediction(score=score, feedback=feedback)

    signatures = {}
    for spec in task["program"]:
        fields = {
            f["name"]: (str, (dspy.InputField if f["kind"] == "input" else dspy.OutputField)(desc=f["desc"]))
            for f in spec["fields"]
        }
        signatures[spec["name"]] = dspy.Signature(fields, spec["instructions"])

    class FactQA(dspy.Module):
        def __init__(self) -> None:
            super().__init__()
            self.extract = dspy.Predict(signatures["extract"])
            self.answer = dspy.Predict(signatures["answer"])

        def forward(self, context: str, question: str) -> dspy.Prediction:
            fact = self.extract(context=context, question=question).fact
            answer = self.answer(fact=fact, question=question).answer
            return dspy.Prediction(fact=fact, answer=answer)

    def examples(rows: list[dict[str, str]]) -> list[dspy.Example]:
        return [dspy.Example(**r).with_inputs("context", "question") for r in rows]

    train, val, dev = (examples(task[k]) for k in ("train", "val", "dev"))
    with tempfile.TemporaryDirectory() as log_dir:
        gepa = dspy.GEPA(
            metric=metric,
            reflection_lm=reflection_lm,
            max_metric_calls=opts["max_metric_calls"],
            reflection_minibatch_size=opts["minibatch"],
            use_merge=opts["use_merge"],
            num_threads=opts["num_threads"],
            seed=opts["seed"],
            log_dir=log_dir,
            track_stats=True,
        )
        before = settled_requests(bench, task["api_base"])
        start = time.perf_counter()
        program = gepa.compile(FactQA(), trainset=train, valset=val)
        wall = time.perf_counter() - start
        after = settled_requests(bench, task["api_base"])
    results = program.detailed_results
    evaluate = dspy.Evaluate(
        devset=dev,
        metric=fact_qa_metric,
        num_threads=opts["num_threads"],
        display_progress=False,
        max_errors=10**6,
    )
    return {
        "score": float(evaluate(program).score),
        "val_before": round(100.0 * results.val_aggregate_scores[0], 2),
        "val_after": round(100.0 * results.val_aggregate_scores[results.best_idx], 2),
        "wall_s": wall,
        "server_calls": _diff(before, after),
        "own_calls": len(lm.history)
        + (len(reflection_lm.history) if hasattr(reflection_lm, "history") else 0),
        "metric_calls": results.total_metric_calls,
        "candidates": len(results.candidates),
        "instructions": {n: p.signature.instructions for n, p in program.named_predictors()},
        "version": dspy.__version__,
    }


def _diff(before: float | None, after: float | None) -> int | None:
    return None if before is None or after is None else int(after - before)


# ---- orchestration -----------------------------------------------------------------------------------------


def run_worker(python: str, which: str, task_file: str) -> dict[str, Any]:
    bench = _bench_optimizers()
    env = {**bench._clean_env(), "PYTHONPATH": str(ROOT)} if which == "dspylite" else bench._clean_env()
    out = subprocess.run(
        [python, str(Path(__file__).resolve()), "--worker", which, "--task", task_file],
        capture_output=True,
        text=True,
        env=env,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{which} GEPA worker failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_task(args: argparse.Namespace, api_base: str, served_name: str) -> dict[str, Any]:
    options = {
        "max_metric_calls": args.max_metric_calls,
        "minibatch": args.minibatch,
        "use_merge": not args.no_merge,
        "num_threads": args.num_threads,
        "max_tokens": args.max_tokens,
        "reflection": args.reflection,
        "reflection_max_tokens": args.reflection_max_tokens,
        "seed": 0,
        "run_dir": str(args.run_dir.resolve()) if args.run_dir else None,
    }
    return _bench_optimizers().fact_qa_task(args, api_base, served_name, options)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--api-base", help="use this running vLLM server instead of starting one")
    parser.add_argument("--served-name", default="tiny")
    parser.add_argument("--model-dir", type=Path, help="model directory to serve (default: the tiny model)")
    parser.add_argument("--n-train", type=int, default=30)
    parser.add_argument("--n-val", type=int, default=20)
    parser.add_argument("--n-dev", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument("--max-metric-calls", type=int, default=150)
    parser.add_argument("--minibatch", type=int, default=3)
    parser.add_argument("--no-merge", action="store_true")
    parser.add_argument("--reflection", choices=["tiny", "scripted"], default="tiny")
    parser.add_argument("--reflection-max-tokens", type=int, default=256)
    parser.add_argument("--num-threads", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--run-dir", type=Path, help="keep dspylite's GEPA run directory here")
    parser.add_argument("--skip-dspy", action="store_true", help="run the dspylite half only")
    parser.add_argument("--dspy-venv", type=Path, default=DEFAULT_DSPY_VENV)
    parser.add_argument("--worker", choices=["dspylite", "dspy"], help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        task = json.loads(Path(args.task).read_text())
        result = (run_dspylite if args.worker == "dspylite" else run_dspy)(task)
        print(json.dumps(result))
        return 0

    bench = _bench_optimizers()
    dspy_python = None if args.skip_dspy else bench.ensure_dspy_venv(args.dspy_venv)
    server = None
    if args.api_base:
        api_base, served_name = args.api_base, args.served_name
    else:
        from serving import VLLMServer
        from sources.models.tiny_model import build_tiny_model

        model_dir = args.model_dir or build_tiny_model()
        server = VLLMServer(model_dir, served_model_name=args.served_name, extra_args=["--dtype", "float32"])
        print(f"starting vLLM on {model_dir} ...", flush=True)
        server.start()
        api_base, served_name = server.api_base, args.served_name
    try:
        task = build_task(args, api_base, served_name)
        with tempfile.TemporaryDirectory() as tmp:
            task_file = str(Path(tmp) / "task.json")
            Path(task_file).write_text(json.dumps(task))
            results = {"dspylite": run_worker(sys.executable, "dspylite", task_file)}
            if dspy_python is not None:
                results["dspy"] = run_worker(str(dspy_python), "dspy", task_file)
    finally:
        if server is not None:
            server.stop()
    print()
    version = results.get("dspy", {}).get("version", "-")
    print(
        f"Fact QA, tiny model, train {len(task['train'])} / val {len(task['val'])} / dev {len(task['dev'])}, "
        f"options { {k: v for k, v in task['options'].items() if k != 'run_dir'} }, DSPy {version}"
    )
    print(
        "| library | dev score | val before -> after | LM calls (server) | metric calls | candidates | wall (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for tool, r in results.items():
        print(
            f"| {tool} | {r['score']:.1f} | {r['val_before']} -> {r['val_after']} | {r['server_calls']} "
            f"(own {r['own_calls']}) | {r['metric_calls']} | {r['candidates']} | {r['wall_s']:.1f} |"
        )
    for tool, r in results.items():
        print(f"{tool} best instructions: {json.dumps(r['instructions'])[:600]}")
    # The guarantee measured here: the stated budget is never exceeded (DSPy's ends past it).
    used = results["dspylite"]["metric_calls"] / task["options"]["max_metric_calls"]
    print(f"key ratio: dspylite metric calls / budget = {used:.2f} (target <= 1.00)")
    return 0 if used <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
