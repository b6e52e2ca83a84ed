"""Run DSPy's own unit tests against dspylite, with ``dspy`` aliased to ``dspylite``.

    python bench/dspy_tests_compat.py DSPY_TESTS_DIR [--reference JUNIT_XML] [--outcomes PATH] [pytest args...]

DSPY_TESTS_DIR is a copy of (some of) DSPy's ``tests/`` folder, e.g. ``signatures``, ``primitives``,
``predict``, ``adapters``, ``evaluate``, ``utils``, ``teleprompt``. The DSPy tests are not part of
this repository. Every ``import dspy`` / ``import dspy.x.y`` resolves to ``dspylite`` /
``dspylite.x.y``; DSPy's root ``tests/conftest.py`` is replaced by a minimal one (it resets
settings between tests, as DSPy's does). Prints passed / failed / errors per file and in total.

``--outcomes PATH`` writes one ``test-id<TAB>outcome`` line per test. ``--reference JUNIT_XML`` takes
the JUnit report of the same tree run on real DSPy (``pytest --junitxml=...`` from the folder that
holds ``tests/``); the tests that passed there are the reference set, and the last line printed is
"N of M reference tests pass". Test ids are ``module.path[.Class]::name[params]`` relative to the
tests folder, so the two runs compare although they run from different folders.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

_CONFTEST = """
import pytest


@pytest.fixture(autouse=True)
def clear_settings():
    import importlib

    settings_module = importlib.import_module("dspylite.settings")
    yield
    settings_module._GLOBAL = settings_module.Settings()


@pytest.fixture
def anyio_backend():
    return "asyncio"
"""


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``dspy`` and ``dspy.*`` imports load the matching ``dspylite`` module object."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "dspy" and not fullname.startswith("dspy."):
            return None
        real = "dspylite" + fullname[len("dspy") :]
        try:
            module = importlib.import_module(real)
        except ImportError:
            return None
        return importlib.util.spec_from_loader(
            fullname, self, origin=getattr(module, "__file__", None)
        ), module

    def create_module(self, spec):
        return importlib.import_module("dspylite" + spec.name[len("dspy") :])

    def exec_module(self, module):
        pass


class _Finder(_Alias):
    def find_spec(self, fullname, path, target=None):
        found = super().find_spec(fullname, path, target)
        return found[0] if found else None


class _Tally:
    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            self.outcomes[report.nodeid] = (
                report.outcome if report.when == "call" else f"setup-{report.outcome}"
            )

    def pytest_collectreport(self, report):
        if report.outcome == "failed":
            self.outcomes[report.nodeid + "::<collection>"] = "collection-error"


def test_id_from_nodeid(nodeid: str) -> str:
    """``predict/test_x.py::TestA::test_b[1]`` -> ``predict.test_x.TestA::test_b[1]``."""
    parts = nodeid.split("::")
    module = parts[0].removesuffix(".py").replace("/", ".")
    return ".".join([module, *parts[1:-1]]) + "::" + parts[-1]


def reference_passes(junit_path: Path) -> set[str]:
    """Ids of the tests that passed in a JUnit report written by ``pytest --junitxml``.

    JUnit class names start with the tests package (``tests.predict.test_x``, or ``x.tests.predict.test_x``
    from another folder); everything up to ``tests.`` is dropped so the ids match
    :func:`test_id_from_nodeid` on a run rooted at the tests folder itself.
    """
    passed = set()
    for case in ET.parse(junit_path).getroot().iter("testcase"):
        if any(child.tag in ("failure", "error", "skipped") for child in case):
            continue
        # Whatever folder the reference run started from, ids start below the ``tests`` package.
        parts = case.get("classname", "").split(".")
        classname = ".".join(parts[parts.index("tests") + 1 :] if "tests" in parts else parts)
        passed.add(f"{classname}::{case.get('name')}")
    return passed


def _split_options(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Take this script's own ``--reference``/``--outcomes`` options out; the rest goes to pytest."""
    options: dict[str, str] = {}
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        name, _, value = arg.partition("=")
        if name in ("--reference", "--outcomes"):
            options[name[2:]] = value or next(args)
        else:
            rest.append(arg)
    return options, rest


def main(argv: list[str]) -> int:
    import pytest

    options, argv = _split_options(argv)
    if not argv:
        print(__doc__)
        return 2
    source = Path(argv[0]).resolve()
    sys.meta_path.insert(0, _Finder())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tests"
        import shutil

        shutil.copytree(source, root, ignore=shutil.ignore_patterns("__pycache__"))
        (root / "conftest.py").write_text(_CONFTEST)
        (root / "__init__.py").touch()
        tally = _Tally()
        pytest.main(
            [
                str(root),
                # Node ids relative to the tests folder wherever this script is started from.
                f"--rootdir={root}",
                "-q",
                "-p",
                "no:cacheprovider",
                "--no-header",
                "-rN",
                "--continue-on-collection-errors",
                *argv[1:],
            ],
            plugins=[tally],
        )
    per_file: dict[str, Counter] = {}
    for nodeid, outcome in tally.outcomes.items():
        per_file.setdefault(nodeid.split("::")[0], Counter())[outcome] += 1
    total = Counter()
    for name in sorted(per_file):
        total.update(per_file[name])
        print(f"{name}: {dict(per_file[name])}")
    print(f"TOTAL: {dict(total)}; passed {total['passed']} of {sum(total.values())}")
    outcomes = {test_id_from_nodeid(nodeid): outcome for nodeid, outcome in tally.outcomes.items()}
    if "outcomes" in options:
        lines = [f"{test_id}\t{outcome}" for test_id, outcome in sorted(outcomes.items())]
        Path(options["outcomes"]).write_text("\n".join(lines) + "\n")
    if "reference" in options:
        reference = reference_passes(Path(options["reference"]))
        passing = {test_id for test_id in reference if outcomes.get(test_id) == "passed"}
        print(f"{len(passing)} of {len(reference)} reference tests pass")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
