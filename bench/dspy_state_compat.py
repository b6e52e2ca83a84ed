"""Cross-check program-state files with a real DSPy install (not a test: DSPy is not a dependency).

    python bench/dspy_state_compat.py [--dspy-venv .cache/bench-dspy-venv]

1. DSPy loads ``tests/data/dspy_program_state.json`` (the unit tests' fixture) into the equivalent
   DSPy program: proves the hand-written fixture is in DSPy's real layout.
2. DSPy loads a file saved by dspylite (demos, instructions, an LM binding).
3. dspylite loads a file saved by DSPy.
Exits 1 if any direction fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "dspy_program_state.json"

DSPY_SIDE = r"""
import json, sys, dspy

class FactQA(dspy.Module):
    def __init__(self):
        super().__init__()
        self.extract = dspy.ChainOfThought("context, question -> facts")
        self.answer = dspy.Predict("facts, question -> answer: int")

mode, path = sys.argv[1], sys.argv[2]
if mode == "save":
    p = FactQA()
    p.extract.predict.signature = p.extract.predict.signature.with_instructions("Saved by DSPy.")
    p.extract.predict.demos = [dspy.Example(context="c", question="q", reasoning="r", facts="f", augmented=True)]
    p.answer.demos = [dspy.Example(facts="f", question="q", answer=3)]
    p.answer.lm = dspy.LM("openai/adapter-3", temperature=0.0, max_tokens=256)
    p.save(path)
else:
    p = FactQA()
    p.load(path)
    print(json.dumps({
        "instructions": p.extract.predict.signature.instructions,
        "demos": [len(p.extract.predict.demos), len(p.answer.demos)],
        "lm": p.answer.lm.model if p.answer.lm else None,
    }))
"""


def dspylite_program():
    import dspylite as dspy

    class Program(dspy.Module):
        def __init__(self):
            self.extract = dspy.ChainOfThought("context, question -> facts")
            self.answer = dspy.Predict("facts, question -> answer: int")

    return Program()


def run_dspy(python: Path, *args: str) -> str:
    out = subprocess.run([str(python), "-c", DSPY_SIDE, *args], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return out.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dspy-venv", type=Path, default=ROOT / ".cache" / "bench-dspy-venv")
    args = parser.parse_args()
    python = args.dspy_venv / "bin" / "python"
    if not python.exists():
        print(f"no DSPy venv at {args.dspy_venv}; create it with: python bench/overhead.py --install-dspy")
        return 1

    sys.path.insert(0, str(ROOT))
    from dspylite.example import Example
    from dspylite.lm import LM

    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        checks = []
        fixture = json.loads(run_dspy(python, "load", str(FIXTURE)).splitlines()[-1])
        checks.append(
            ("DSPy loads the fixture", fixture["demos"] == [2, 1] and fixture["lm"] == "openai/factqa-sft-3")
        )

        program = dspylite_program()
        program.extract.predict.signature = program.extract.predict.signature.with_instructions(
            "Saved by dspylite."
        )
        program.extract.predict.demos = [
            Example(context="c", question="q", reasoning="r", facts="f", augmented=True)
        ]
        program.answer.lm = LM("base").copy(model="adapter-7", temperature=0.5)
        ours = program.save(Path(tmp) / "dspylite.json")
        loaded = json.loads(run_dspy(python, "load", str(ours)).splitlines()[-1])
        checks.append(
            (
                "DSPy loads a dspylite file",
                loaded == {"instructions": "Saved by dspylite.", "demos": [1, 0], "lm": "adapter-7"},
            )
        )

        theirs = Path(tmp) / "dspy.json"
        run_dspy(python, "save", str(theirs))
        back = dspylite_program().load(theirs)
        checks.append(
            (
                "dspylite loads a DSPy file",
                back.extract.predict.signature.instructions == "Saved by DSPy."
                and back.answer.lm.model == "openai/adapter-3"
                and back.answer.demos[0].answer == 3,
            )
        )
        for name, ok in checks:
            print(f"{'ok  ' if ok else 'FAIL'} {name}")
            failures += not ok
    print(f"KEY dspy_state_compat={len(checks) - failures}/{len(checks)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
