"""Run DSPy's own unit tests against dspylite, with ``dspy`` mapped to ``dspylite``.

    python bench/dspy_tests_compat.py DSPY_TESTS_DIR --reference-python PY [--python PY]
        [--reference-dir DIR] [--outcomes PATH] [--files F1,F2,...] [--timeout S]

DSPY_TESTS_DIR is DSPy's ``tests/`` folder at the pinned commit (4ed377ee9, "Update versions for 3.3.1");
it is not part of this repository. The bench runs the 24 files in ``FILES`` (or ``--files``), each in
its own pytest process, twice:

* the control: the files as they are (DSPy's own ``conftest.py``) on real DSPy, with the interpreter
  ``--reference-python`` (a scratch venv: ``pip install dspy==3.4.1 pytest pytest-asyncio pytest-mock
  pillow``), or the JUnit reports a previous run saved in ``--reference-dir``;
* dspylite: a copy whose root ``conftest.py`` maps every ``dspy`` / ``dspy.a.b`` import to ``dspylite`` /
  ``dspylite.a.b`` (a path dspylite lacks fails to import; real DSPy is never loaded), resets dspylite's
  settings between tests and keeps DSPy's skip flags. It runs with ``--python`` (default: the scratch
  venv, which has the test files' own imports: litellm's types, orjson, cloudpickle, pytest-asyncio;
  dspylite's dependencies must be installed there too) and this checkout first on ``PYTHONPATH``.

The tests that pass on DSPy are the reference set; the output is a per-file table and
"N of M control-passing tests pass". ``--outcomes PATH`` writes one ``test-id<TAB>outcome<TAB>reason``
line per control-passing test (the reason is the first line of the failure). Offline; about a minute.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The files the issue measures: those exercising the DSPy surface dspylite implements.
FILES = [
    "signatures/test_signature.py",
    "signatures/test_custom_types.py",
    "primitives/test_example.py",
    "primitives/test_module.py",
    "primitives/test_base_module.py",
    "predict/test_predict.py",
    "predict/test_chain_of_thought.py",
    "predict/test_react.py",
    "predict/test_best_of_n.py",
    "predict/test_refine.py",
    "predict/test_parallel.py",
    "adapters/test_chat_adapter.py",
    "adapters/test_json_adapter.py",
    "adapters/test_tool.py",
    "evaluate/test_evaluate.py",
    "evaluate/test_metrics.py",
    "evaluate/test_auto_evaluation.py",
    "utils/test_saving.py",
    "utils/test_settings.py",
    "teleprompt/test_teleprompt.py",
    "teleprompt/test_bootstrap.py",
    "teleprompt/test_random_search.py",
    "teleprompt/test_bootstrap_finetune.py",
    "teleprompt/test_bettertogether.py",
]

# Replaces DSPy's root conftest.py in the dspylite copy. DSPy's own one imports dspy internals
# (dspy.dsp.utils.settings, the LiteLLM proxy test server) that are no part of DSPy's API.
_CONFTEST = '''
import importlib
import importlib.abc
import importlib.util
import os
import sys

import pytest


class _DspyToDspylite(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``dspy.a.b`` loads the module object ``dspylite.a.b``; a path dspylite lacks fails to import."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "dspy" and not fullname.startswith("dspy."):
            return None
        real = "dspylite" + fullname[len("dspy"):]
        try:
            module = importlib.import_module(real)
        except ModuleNotFoundError as error:
            if error.name != real:
                raise
            raise ModuleNotFoundError(f"No module named {fullname!r} (dspylite has no {real})", name=fullname) from None
        return importlib.util.spec_from_loader(fullname, self, origin=getattr(module, "__file__", None))

    def create_module(self, spec):
        return importlib.import_module("dspylite" + spec.name[len("dspy"):])

    def exec_module(self, module):
        # The import system stamped the alias spec on the dspylite module; give it its own back.
        module.__spec__ = importlib.util.find_spec(module.__name__) or module.__spec__


sys.meta_path.insert(0, _DspyToDspylite())

SKIP_DEFAULT_FLAGS = ["reliability", "extra", "llm_call", "deno"]


@pytest.fixture(autouse=True)
def clear_settings():
    """Fresh settings for every test, as DSPy's conftest does."""
    settings_module = importlib.import_module("dspylite.settings")
    yield
    settings_module.reset()


@pytest.fixture
def anyio_backend():
    return "asyncio"


def pytest_addoption(parser):
    for flag in SKIP_DEFAULT_FLAGS:
        parser.addoption(f"--{flag}", action="store_true", default=False, help=f"run {flag} tests")


def pytest_configure(config):
    for flag in SKIP_DEFAULT_FLAGS:
        config.addinivalue_line("markers", flag)


def pytest_collection_modifyitems(config, items):
    for flag in SKIP_DEFAULT_FLAGS:
        if config.getoption(f"--{flag}"):
            continue
        skip_mark = pytest.mark.skip(reason=f"need --{flag} option to run")
        for item in items:
            if flag in item.keywords:
                item.add_marker(skip_mark)


@pytest.fixture
def lm_for_test():
    model = os.environ.get("LM_FOR_TEST", None)
    if model is None:
        pytest.skip("LM_FOR_TEST is not set in the environment variables")
    return model
'''


def junit_name(test_file: str) -> str:
    return test_file.removesuffix(".py").replace("/", "_") + ".xml"


def read_junit(path: Path) -> dict[str, tuple[str, str]]:
    """``{test id: (outcome, reason)}`` from a JUnit report; ids are ``module.path[.Class]::name``
    below the ``tests`` package, whatever folder the run started from."""
    results: dict[str, tuple[str, str]] = {}
    if not path.exists():
        return results
    for case in ET.parse(path).getroot().iter("testcase"):
        parts = case.get("classname", "").split(".")
        classname = ".".join(parts[parts.index("tests") + 1 :] if "tests" in parts else parts)
        outcome, reason = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                reason = (child.get("message") or child.text or "").strip().splitlines()
                reason = reason[0][:300] if reason else ""
                break
        results[f"{classname}::{case.get('name')}"] = (outcome, reason)
    return results


def run_files(python: str, root: Path, files: list[str], junit_dir: Path, env: dict, timeout: float) -> None:
    """Each file in its own pytest process (from the folder holding ``tests/``), one JUnit report each."""
    junit_dir.mkdir(parents=True, exist_ok=True)
    for test_file in files:
        report = junit_dir / junit_name(test_file)
        command = [
            python, "-m", "pytest", f"tests/{test_file}", "-q", "-p", "no:cacheprovider",
            "--no-header", f"--rootdir={root}", f"--junitxml={report}",
        ]  # fmt: skip
        try:
            done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
            if not report.exists():
                print(
                    f"{test_file}: no report (exit {done.returncode}): {done.stdout[-400:]}", file=sys.stderr
                )
        except subprocess.TimeoutExpired:
            print(f"{test_file}: timed out after {timeout:.0f}s", file=sys.stderr)


def _env(pythonpath: list[str]) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(pythonpath + [p for p in [env.get("PYTHONPATH")] if p])
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # litellm would fetch its cost map over the network
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tests_dir", type=Path, help="DSPy's tests/ folder")
    parser.add_argument("--reference-python", help="interpreter with dspy==3.4.1 for the control run")
    parser.add_argument("--reference-dir", type=Path, help="JUnit reports of the control (read, or written)")
    parser.add_argument("--python", help="interpreter for the dspylite run (default: --reference-python)")
    parser.add_argument(
        "--outcomes", type=Path, help="write test-id, outcome, reason per control-passing test"
    )
    parser.add_argument("--files", help="comma-separated subset of the files, relative to tests/")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per file")
    args = parser.parse_args(argv)
    files = args.files.split(",") if args.files else FILES
    python = args.python or args.reference_python
    if python is None:
        parser.error("give --python (and --reference-python or --reference-dir)")
    if args.reference_python is None and args.reference_dir is None:
        parser.error("give --reference-python or --reference-dir")

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        reference_dir = args.reference_dir or tmp_path / "reference"
        if args.reference_python:
            control = tmp_path / "control"
            shutil.copytree(args.tests_dir, control / "tests", ignore=shutil.ignore_patterns("__pycache__"))
            run_files(args.reference_python, control, files, reference_dir, _env([]), args.timeout)

        lite = tmp_path / "dspylite"
        shutil.copytree(args.tests_dir, lite / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        (lite / "tests" / "conftest.py").write_text(_CONFTEST)
        run_files(python, lite, files, tmp_path / "dspylite-junit", _env([str(REPO)]), args.timeout)

        rows, lines, total_reference, total_passing = [], [], 0, 0
        for test_file in files:
            reference = read_junit(reference_dir / junit_name(test_file))
            ours = read_junit(tmp_path / "dspylite-junit" / junit_name(test_file))
            control_passing = sorted(t for t, (outcome, _) in reference.items() if outcome == "passed")
            passing = [t for t in control_passing if ours.get(t, ("missing",))[0] == "passed"]
            rows.append((test_file, len(control_passing), len(passing)))
            total_reference += len(control_passing)
            total_passing += len(passing)
            for test_id in control_passing:
                outcome, reason = ours.get(test_id, ("not-run", "not collected (import or collection error)"))
                lines.append(f"{test_id}\t{outcome}\t{reason if outcome != 'passed' else ''}")

    width = max(len(f) for f in files)
    print(f"| {'file'.ljust(width)} | control-passing | dspylite |")
    print(f"|{'-' * (width + 2)}|-----------------|----------|")
    for test_file, reference_count, passing_count in rows:
        print(f"| {test_file.ljust(width)} | {reference_count:15d} | {passing_count:8d} |")
    print(f"{total_passing} of {total_reference} control-passing tests pass")
    if args.outcomes:
        args.outcomes.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
