"""``import dspylite`` (and the core names) must not pull in the heavy training/serving stacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ["torch", "transformers", "trl", "peft", "vllm", "datasets"]

PROBE = """
import json, sys
{statement}
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def heavy_modules_after(statement: str) -> list[str]:
    code = PROBE.format(statement=statement, heavy=HEAVY)
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_probe_detects_a_heavy_import():
    # The probe itself works: json is "heavy" for this check, and it is seen.
    code = PROBE.format(statement="import json", heavy=["json"])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout) == ["json"]


def test_import_dspylite_is_light():
    assert heavy_modules_after("import dspylite") == []


def test_core_names_are_light():
    statement = (
        "import dspylite as dspy\n"
        "names = [dspy.Signature, dspy.Predict, dspy.ChainOfThought, dspy.ReAct, dspy.BestOfN, dspy.Example,\n"
        "         dspy.Evaluate, dspy.ChatAdapter, dspy.JSONAdapter, dspy.configure, dspy.capture_traces]\n"
        "from dspylite.utils import DummyLM\n"
        "p = dspy.Predict('q -> a: int', lm=DummyLM([{'a': 1}]))\n"
        "assert p(q='x').a == 1\n"
    )
    assert heavy_modules_after(statement) == []


@pytest.mark.parametrize(
    "package", [p for p in ("finetune", "rl", "serving") if (ROOT / p / "__init__.py").exists()]
)
def test_training_and_serving_packages_import_lazily(package):
    assert heavy_modules_after(f"import {package}") == []
