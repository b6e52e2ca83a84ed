"""install_dspy_alias: unchanged ``import dspy`` / ``from dspy.x import y`` code runs on dspylite."""

from __future__ import annotations

import importlib
import sys
import types

import pytest

import dspylite
from dspylite.dspy_alias import install_dspy_alias, uninstall_dspy_alias
from dspylite.errors import ConfigError


@pytest.fixture(autouse=True)
def no_alias_left():
    settings_module = importlib.import_module("dspylite.settings")
    saved = settings_module._GLOBAL
    uninstall_dspy_alias()
    yield
    uninstall_dspy_alias()
    settings_module._GLOBAL = saved


def test_dspy_imports_resolve_to_dspylite_modules():
    install_dspy_alias()
    import dspy
    import dspy.predict.predict
    from dspy.teleprompt import BootstrapFewShot

    assert dspy is dspylite
    assert dspy.predict.predict is importlib.import_module("dspylite.predict.predict")
    assert BootstrapFewShot is dspylite.BootstrapFewShot
    # the real module keeps its own identity: its spec still names dspylite
    assert dspylite.predict.predict.__spec__.name == "dspylite.predict.predict"


def test_unchanged_dspy_program_runs():
    install_dspy_alias()
    source = (
        "import dspy\n"
        "from dspy.teleprompt import LabeledFewShot\n"
        "from dspy.utils.dummies import DummyLM\n"
        "dspy.configure(lm=DummyLM([{'answer': 'Oslo'}]))\n"
        "train = [dspy.Example(question='Where does Ann live?', answer='Oslo').with_inputs('question')]\n"
        "program = LabeledFewShot(k=1).compile(dspy.Predict('question -> answer'), trainset=train)\n"
        "result = program(question='Where does Ann live?').answer\n"
    )
    namespace: dict = {}
    exec(compile(source, "<dspy program>", "exec"), namespace)
    assert namespace["result"] == "Oslo"
    assert len(namespace["program"].demos) == 1


def test_missing_dspy_path_names_it():
    install_dspy_alias()
    with pytest.raises(ModuleNotFoundError, match="dspylite has no 'dspylite.retrievers'"):
        importlib.import_module("dspy.retrievers")


def test_install_is_idempotent_and_uninstall_removes_it():
    install_dspy_alias()
    install_dspy_alias()
    finders = [f for f in sys.meta_path if type(f).__name__ == "_DspyAliasFinder"]
    assert len(finders) == 1
    import dspy  # noqa: F401

    uninstall_dspy_alias()
    assert "dspy" not in sys.modules
    assert not any(type(f).__name__ == "_DspyAliasFinder" for f in sys.meta_path)


def test_refuses_when_real_dspy_already_imported(monkeypatch):
    monkeypatch.setitem(sys.modules, "dspy", types.ModuleType("dspy"))
    with pytest.raises(ConfigError, match="already imported"):
        install_dspy_alias()


def test_exported_from_the_top_level():
    assert dspylite.install_dspy_alias is install_dspy_alias
