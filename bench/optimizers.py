"""Prompt optimizers side by side with DSPy: same program, data, seed and vLLM server.

    python bench/optimizers.py                         # builds/loads the tiny model and starts vLLM
    python bench/optimizers.py --api-base http://127.0.0.1:8000/v1 --served-name tiny

For BootstrapFewShot and BootstrapFewShotWithRandomSearch, each library compiles the Fact QA program
(two predictors: extract the fact, then answer) on the same trainset/valset with the same options,
against the same server, each starting from a cold LM cache. Reported per run:

* score: the compiled program's Fact QA accuracy on a held-out dev set (each library's own Evaluate);
* LM calls: requests the server completed during the compile, read from vLLM's own /metrics counter
  (so both sides are counted the same way; each library's own count is shown too);
* wall: seconds the compile took.

Targets (each optimizer): score >= DSPy's, LM calls <= DSPy's, wall time < DSPy's. The last line
gives the key ratio and the verdict; the exit status is 1 when a target is missed.

DSPy lives in a separate venv (``.cache/bench-dspy-venv``, created here with ``pip install dspy`` when
missing; DSPy does not need torch and the install is refused if anything tries to pull it in). Its
half runs in that venv through a subprocess of this same file (``--worker dspy``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The repository root goes first: bench/serving.py would otherwise shadow the ``serving`` package.
sys.path.insert(0, str(ROOT))
DEFAULT_DSPY_VENV = ROOT / ".cache" / "bench-dspy-venv"
OPTIMIZERS = ("BootstrapFewShot", "BootstrapFewShotWithRandomSearch")


# ---- shared by both workers ----------------------------------------------------------------------------


def server_requests(api_base: str) -> float | None:
    """vLLM's count of finished requests (Prometheus ``vllm:request_success_total``), or None."""
    url = api_base.rstrip("/").removesuffix("/v1") + "/metrics"
    try:
        text = urllib.request.urlopen(url, timeout=10).read().decode()
    except OSError:
        return None
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith("vllm:request_success_total"):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else None


def _load_task(task_file: str) -> dict[str, Any]:
    return json.loads(Path(task_file).read_text())


# ---- the dspylite half -----------------------------------------------------------------------------------


def run_dspylite(task: dict[str, Any], optimizer: str) -> dict[str, Any]:
    import dspylite as dspy
    from dspylite.datasets import fact_qa_metric
    from dspylite.datasets.programs import FactQA
    from dspylite.lm import LM
    from dspylite.optimizers import BootstrapFewShot, BootstrapFewShotWithRandomSearch

    def examples(rows: list[dict[str, str]]) -> list[dspy.Example]:
        return [dspy.Example(**r).with_inputs("context", "question") for r in rows]

    train, val, dev = (examples(task[k]) for k in ("train", "val", "dev"))
    opts = task["options"]
    with tempfile.TemporaryDirectory() as cache_dir:
        lm = LM(
            f"openai/{task['served_name']}",
            api_base=task["api_base"],
            api_key="EMPTY",
            temperature=0.0,
            max_tokens=opts["max_tokens"],
            cache_dir=cache_dir,
        )
        dspy.configure(lm=lm)
        if optimizer == "BootstrapFewShot":
            opt = BootstrapFewShot(
                metric=fact_qa_metric,
                max_bootstrapped_demos=opts["max_bootstrapped_demos"],
                max_labeled_demos=opts["max_labeled_demos"],
                num_threads=opts["num_threads"],
                seed=opts["seed"],
                progress=False,
            )
            compile_kwargs: dict[str, Any] = {"trainset": train}
        else:
            opt = BootstrapFewShotWithRandomSearch(
                metric=fact_qa_metric,
                max_bootstrapped_demos=opts["max_bootstrapped_demos"],
                max_labeled_demos=opts["max_labeled_demos"],
                num_candidate_programs=opts["num_candidate_programs"],
                num_threads=opts["num_threads"],
                seed=opts["seed"],
                progress=False,
            )
            compile_kwargs = {"trainset": train, "valset": val}
        before = server_requests(task["api_base"])
        start = time.perf_counter()
        program = opt.compile(FactQA(), **compile_kwargs)
        wall = time.perf_counter() - start
        after = server_requests(task["api_base"])
        calls_own = lm.usage["calls"]
        result = dspy.Evaluate(
            devset=dev, metric=fact_qa_metric, num_threads=opts["num_threads"], display_progress=False
        )(program)
    return {
        "score": result.score,
        "wall_s": wall,
        "server_calls": _diff(before, after),
        "own_calls": calls_own,
        "demos": {n: len(p.demos) for n, p in program.named_predictors()},
    }


# ---- the DSPy half (runs in the DSPy venv) ---------------------------------------------------------------


def run_dspy(task: dict[str, Any], optimizer: str) -> dict[str, Any]:
    import dspy

    from dspylite.datasets.fact_qa import fact_qa_metric  # pure Python: no dspylite runtime in DSPy's venv

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)  # cold, like the dspylite half
    opts = task["options"]
    lm = dspy.LM(
        f"openai/{task['served_name']}",
        api_base=task["api_base"],
        api_key="EMPTY",
        temperature=0.0,
        max_tokens=opts["max_tokens"],
        num_retries=3,
    )
    dspy.configure(lm=lm, max_errors=1_000_000)  # parse failures are scored 0, not fatal, as in dspylite

    signatures = {}
    for spec in task["program"]:
        fields = {
            f["name"]: (str, (dspy.InputField if f["kind"] == "input" else dspy.OutputField)(desc=f["desc"]))
            for f in spec["fields"]
        }
        signatures[spec["name"]] = dspy.Signature(fields, spec["instructions"])

    class FactQA(dspy.Module):  # the same two steps as dspylite.datasets.programs.FactQA
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
    if optimizer == "BootstrapFewShot":
        opt = dspy.BootstrapFewShot(
            metric=fact_qa_metric,
            max_bootstrapped_demos=opts["max_bootstrapped_demos"],
            max_labeled_demos=opts["max_labeled_demos"],
            max_errors=1_000_000,
        )
        compile_kwargs: dict[str, Any] = {"trainset": train}
    else:
        opt = dspy.BootstrapFewShotWithRandomSearch(
            metric=fact_qa_metric,
            max_bootstrapped_demos=opts["max_bootstrapped_demos"],
            max_labeled_demos=opts["max_labeled_demos"],
            num_candidate_programs=opts["num_candidate_programs"],
            num_threads=opts["num_threads"],
            max_errors=1_000_000,
        )
        compile_kwargs = {"trainset": train, "valset": val}
    before = server_requests(task["api_base"])
    start = time.perf_counter()
    program = opt.compile(FactQA(), **compile_kwargs)
    wall = time.perf_counter() - start
    after = server_requests(task["api_base"])
    own_calls = len(lm.history)
    evaluate = dspy.Evaluate(
        devset=dev,
        metric=fact_qa_metric,
        num_threads=opts["num_threads"],
        display_progress=False,
        max_errors=1_000_000,
    )
    score = float(evaluate(program).score)
    return {
        "score": score,
        "wall_s": wall,
        "server_calls": _diff(before, after),
        "own_calls": own_calls,
        "demos": {n: len(p.demos) for n, p in program.named_predictors()},
        "version": dspy.__version__,
    }


def _diff(before: float | None, after: float | None) -> int | None:
    return None if before is None or after is None else int(after - before)


# ---- orchestration -----------------------------------------------------------------------------------------


def ensure_dspy_venv(venv: Path) -> Path:
    """The DSPy venv's python: reused when it imports dspy, else created with pip (never with torch)."""
    python = venv / "bin" / "python"
    env = _clean_env()
    if (
        python.exists()
        and subprocess.run([str(python), "-c", "import dspy"], env=env, capture_output=True).returncode == 0
    ):
        return python
    print(f"installing dspy into {venv} ...", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # A constraint no torch release satisfies: if any dependency wanted torch, the install fails loudly.
    constraints = venv / "no-torch-constraints.txt"
    constraints.write_text("torch==0.0.0.dev0\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-c", str(constraints), "dspy"], check=True, env=env
    )
    return python


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def run_worker(python: str, which: str, task_file: str, optimizer: str) -> dict[str, Any]:
    env = {**_clean_env(), "PYTHONPATH": str(ROOT)} if which == "dspylite" else _clean_env()
    out = subprocess.run(
        [
            python,
            str(Path(__file__).resolve()),
            "--worker",
            which,
            "--task",
            task_file,
            "--optimizer",
            optimizer,
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{which} {optimizer} worker failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_task(args: argparse.Namespace, api_base: str, served_name: str) -> dict[str, Any]:
    options = {
        "max_bootstrapped_demos": args.max_bootstrapped_demos,
        "max_labeled_demos": args.max_labeled_demos,
        "num_candidate_programs": args.num_candidate_programs,
        "num_threads": args.num_threads,
        "max_tokens": args.max_tokens,
        "seed": 0,
    }
    return fact_qa_task(args, api_base, served_name, options)


def fact_qa_task(
    args: argparse.Namespace, api_base: str, served_name: str, options: dict[str, Any]
) -> dict[str, Any]:
    """The Fact QA task both libraries run (splits and the program's signatures), as plain JSON."""
    from dspylite.datasets import load_fact_qa
    from dspylite.datasets.programs import FactQA

    data = load_fact_qa(seed=args.seed, n_train=args.n_train, n_dev=args.n_val + args.n_dev, n_test=0)
    rows = {
        "train": [e.toDict() for e in data["train"]],
        "val": [e.toDict() for e in data["dev"][: args.n_val]],
        "dev": [e.toDict() for e in data["dev"][args.n_val :]],
    }
    program = [
        {
            "name": name,
            "instructions": p.signature.instructions,
            "fields": [{"name": f.name, "kind": f.kind, "desc": f.desc} for f in p.signature.fields.values()],
        }
        for name, p in FactQA().named_predictors()
    ]
    return {"api_base": api_base, "served_name": served_name, "program": program, "options": options, **rows}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--api-base", help="use this running vLLM server instead of starting one")
    parser.add_argument("--served-name", default="tiny", help="model name the server serves")
    parser.add_argument("--model-dir", type=Path, help="model directory to serve (default: the tiny model)")
    parser.add_argument("--n-train", type=int, default=24)
    parser.add_argument("--n-val", type=int, default=24)
    parser.add_argument(
        "--n-dev", type=int, default=60, help="held-out examples scoring the compiled programs"
    )
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument("--max-bootstrapped-demos", type=int, default=2)
    parser.add_argument("--max-labeled-demos", type=int, default=2)
    parser.add_argument("--num-candidate-programs", type=int, default=3)
    parser.add_argument("--num-threads", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--dspy-venv", type=Path, default=DEFAULT_DSPY_VENV)
    parser.add_argument("--worker", choices=["dspylite", "dspy"], help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        task = _load_task(args.task)
        result = (run_dspylite if args.worker == "dspylite" else run_dspy)(task, args.optimizer)
        print(json.dumps(result))
        return 0

    dspy_python = ensure_dspy_venv(args.dspy_venv)
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
            results: dict[str, dict[str, dict[str, Any]]] = {}
            for optimizer in OPTIMIZERS:
                results[optimizer] = {
                    "dspylite": run_worker(sys.executable, "dspylite", task_file, optimizer),
                    "dspy": run_worker(str(dspy_python), "dspy", task_file, optimizer),
                }
                for tool in ("dspylite", "dspy"):
                    r = results[optimizer][tool]
                    print(
                        f"{optimizer:<33} {tool:<9} score {r['score']:6.2f}  LM calls {r['server_calls']} "
                        f"(own count {r['own_calls']})  wall {r['wall_s']:7.2f} s  demos {r['demos']}",
                        flush=True,
                    )
    finally:
        if server is not None:
            server.stop()
    return report(results, task["options"], len(task["train"]), len(task["val"]), len(task["dev"]))


def report(
    results: dict[str, dict[str, dict[str, Any]]],
    options: dict[str, Any],
    n_train: int,
    n_val: int,
    n_dev: int,
) -> int:
    version = results[OPTIMIZERS[0]]["dspy"].get("version", "?")
    print()
    print(
        f"Fact QA, tiny model, train {n_train} / val {n_val} / dev {n_dev}, options {options}, DSPy {version}"
    )
    print("| optimizer | library | dev score | LM calls (server) | compile wall (s) |")
    print("|---|---|---|---|---|")
    verdicts = []
    for optimizer, pair in results.items():
        for tool in ("dspylite", "dspy"):
            r = pair[tool]
            print(f"| {optimizer} | {tool} | {r['score']:.1f} | {r['server_calls']} | {r['wall_s']:.1f} |")
        ours, theirs = pair["dspylite"], pair["dspy"]
        calls_ours = ours["server_calls"] if ours["server_calls"] is not None else ours["own_calls"]
        calls_theirs = theirs["server_calls"] if theirs["server_calls"] is not None else theirs["own_calls"]
        speedup = theirs["wall_s"] / max(ours["wall_s"], 1e-9)
        ok = (
            ours["score"] >= theirs["score"]
            and calls_ours <= calls_theirs
            and ours["wall_s"] < theirs["wall_s"]
        )
        verdicts.append(
            (optimizer, speedup, calls_ours / max(calls_theirs, 1), ours["score"] - theirs["score"], ok)
        )
    print()
    for optimizer, speedup, call_ratio, score_diff, ok in verdicts:
        print(
            f"{optimizer}: {speedup:.2f}x faster, LM calls {call_ratio:.2f}x of DSPy's, score {score_diff:+.1f} "
            f"points -> {'PASS' if ok else 'MISS'}"
        )
    all_ok = all(v[-1] for v in verdicts)
    key = verdicts[-1]
    print(
        f"KEY {key[0]} wall speedup {key[1]:.2f}x (target > 1x), LM calls {key[2]:.2f}x (target <= 1x), "
        f"score {key[3]:+.1f} (target >= 0); all optimizers: {'PASS' if all_ok else 'FAIL'}"
    )
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
