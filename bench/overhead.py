"""Import time and Predict's per-call overhead, dspylite against DSPy, measured in the same run.

    python bench/overhead.py                 # DSPy half runs if its bench venv exists
    python bench/overhead.py --install-dspy  # create .cache/bench-dspy-venv with `pip install dspy` first

* import: ``import dspylite`` vs ``import dspy``, each in fresh interpreters (median of --import-runs,
  after one warm-up run that writes the bytecode caches).
* per call: ``Predict("question -> answer")`` called --calls times with a scripted LM (each library's
  DummyLM in dict mode, which renders the answer through the library's own chat adapter; no response
  cache is involved on either side), best of 3 timed rounds after a warm-up.

DSPy lives in a separate venv (it is not a dspylite dependency); its half runs there through a
subprocess of this same file (``--worker dspy``), so both sides run identical measurement code.
Targets: import at least 5x faster than ``import dspy``; per-call overhead at most 1/5 of DSPy's.
Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DSPY_VENV = ROOT / ".cache" / "bench-dspy-venv"
IMPORT_TARGET = 5.0  # dspy import time / dspylite import time
OVERHEAD_TARGET = 0.2  # dspylite per-call / dspy per-call


# ---- workers: run inside the interpreter being measured ------------------------------------------------


def _worker_dspylite(calls: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import dspylite as dspy
    from dspylite.completion import Completion
    from dspylite.utils import DummyLM

    class ConstantLM:
        """Returns one pre-rendered completion: what is left is dspylite's own work."""

        model = "constant"
        text = "[[ ## answer ## ]]\n42\n\n[[ ## completed ## ]]"

        def generate(self, messages, *, n=1, rollout_id=None, **kwargs):
            return [Completion(text=self.text, model=self.model)]

    dummy = _time_calls(dspy.Predict("question -> answer", lm=DummyLM({"": {"answer": "42"}})), calls)
    constant = _time_calls(dspy.Predict("question -> answer", lm=ConstantLM()), calls)
    return {"dummy_lm_us": dummy, "constant_lm_us": constant}


def _worker_dspy(calls: int) -> dict:
    import dspy
    from dspy.utils import DummyLM

    dspy.configure(lm=DummyLM({"": {"answer": "42"}}))
    return {
        "dummy_lm_us": _time_calls(dspy.Predict("question -> answer"), calls),
        "version": dspy.__version__,
    }


def _time_calls(predict, calls: int) -> float:
    """Best of three rounds, in microseconds per call (best-of filters noise from other processes)."""
    for _ in range(min(200, calls)):
        assert predict(question="What is six times seven?").answer == "42"
    rounds = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(calls):
            predict(question="What is six times seven?")
        rounds.append((time.perf_counter() - start) / calls * 1e6)
    return min(rounds)


# ---- driver ---------------------------------------------------------------------------------------------


def import_seconds(python: str, statement: str, runs: int, env: dict[str, str]) -> float:
    code = f"import time\nt = time.perf_counter()\n{statement}\nprint(time.perf_counter() - t)"
    times = []
    for i in range(runs + 1):
        out = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=True
        )
        if i:  # the first run compiles bytecode; it is not what users see after installation
            times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def run_worker(python: str, which: str, calls: int, env: dict[str, str]) -> dict:
    out = subprocess.run(
        [python, str(Path(__file__).resolve()), "--worker", which, "--calls", str(calls)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{which} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def install_dspy(venv: Path) -> None:
    """A venv with only dspy and its own dependencies (no torch: dspy does not need it)."""
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "dspy"], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000, help="Predict calls per timed round")
    parser.add_argument(
        "--import-runs", type=int, default=7, help="fresh interpreters per import measurement"
    )
    parser.add_argument("--dspy-venv", type=Path, default=DEFAULT_DSPY_VENV, help="venv holding dspy")
    parser.add_argument("--install-dspy", action="store_true", help="create --dspy-venv and pip install dspy")
    parser.add_argument("--worker", choices=["dspylite", "dspy"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "dspylite":
        print(json.dumps(_worker_dspylite(args.calls)))
        return 0
    if args.worker == "dspy":
        print(json.dumps(_worker_dspy(args.calls)))
        return 0

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONDONTWRITEBYTECODE"] = "0"
    ours_env = {**env, "PYTHONPATH": str(ROOT)}
    if args.install_dspy:
        install_dspy(args.dspy_venv)
    dspy_python = args.dspy_venv / "bin" / "python"
    have_dspy = (
        dspy_python.exists()
        and subprocess.run([str(dspy_python), "-c", "import dspy"], capture_output=True, env=env).returncode
        == 0
    )

    ours_import = import_seconds(sys.executable, "import dspylite", args.import_runs, ours_env)
    ours_names = import_seconds(
        sys.executable,
        "import dspylite as d\nd.Predict, d.ChainOfThought, d.Evaluate",
        args.import_runs,
        ours_env,
    )
    ours = run_worker(sys.executable, "dspylite", args.calls, ours_env)
    print(
        f"dspylite  import dspylite                      {ours_import * 1e3:8.1f} ms (median of {args.import_runs})"
    )
    print(f"dspylite  import + Predict/ChainOfThought/Evaluate {ours_names * 1e3:5.1f} ms")
    print(
        f"dspylite  Predict per call, DummyLM            {ours['dummy_lm_us']:8.1f} us ({args.calls} calls)"
    )
    print(f"dspylite  Predict per call, constant-text LM   {ours['constant_lm_us']:8.1f} us")
    if not have_dspy:
        print(
            f"DSPy not installed in {args.dspy_venv}; run with --install-dspy to compare. Targets not checked."
        )
        print(
            f"KEY import={ours_import * 1e3:.1f}ms per_call={ours['dummy_lm_us']:.1f}us (no DSPy to compare)"
        )
        return 0

    theirs_import = import_seconds(str(dspy_python), "import dspy", args.import_runs, env)
    theirs = run_worker(str(dspy_python), "dspy", args.calls, env)
    import_speedup = theirs_import / ours_import
    overhead_ratio = ours["dummy_lm_us"] / theirs["dummy_lm_us"]
    print(f"dspy {theirs['version']:<6} import dspy                     {theirs_import * 1e3:8.1f} ms")
    print(f"dspy {theirs['version']:<6} Predict per call, DummyLM      {theirs['dummy_lm_us']:8.1f} us")
    print(
        f"import: dspylite is {import_speedup:.1f}x faster (with core names resolved: "
        f"{theirs_import / ours_names:.1f}x); target >= {IMPORT_TARGET:.0f}x"
    )
    print(
        f"per call: dspylite takes {overhead_ratio:.3f} of DSPy's time ({1 / overhead_ratio:.1f}x less); "
        f"target <= {OVERHEAD_TARGET}"
    )
    ok = import_speedup >= IMPORT_TARGET and overhead_ratio <= OVERHEAD_TARGET
    print(
        f"KEY import_speedup={import_speedup:.1f}x (target >= {IMPORT_TARGET:.0f}x) "
        f"per_call_ratio={overhead_ratio:.3f} (target <= {OVERHEAD_TARGET}) -> {'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
