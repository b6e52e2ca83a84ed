"""DSPy path ``dspy.teleprompt.bootstrap_finetune``: ``BootstrapFinetune`` and DSPy's helpers for
programs whose predictors carry their own LMs (used by ``BetterTogether``).

The helpers follow DSPy 3.3.1 (MIT License; see THIRD_PARTY_NOTICES.md). ``launch_lms``/``kill_lms``
call an LM's ``launch()``/``kill()`` where it has them; dspylite's HTTP LMs have none (their servers
are managed by the weight optimizers' backend), so for them these do nothing, as for DSPy's API LMs.
"""

from __future__ import annotations

from typing import Any

from dspylite.modules.module import Module
from dspylite.modules.predict import Predict
from dspylite.optimizers.bootstrap_finetune import BootstrapFinetune

__all__ = [
    "BootstrapFinetune",
    "all_predictors_have_lms",
    "assert_no_shared_predictor",
    "assert_structural_equivalency",
    "copy_program_with_lms",
    "get_unique_lms",
    "kill_lms",
    "launch_lms",
    "prepare_student",
    "prepare_teacher",
]


def all_predictors_have_lms(program: Module) -> bool:
    """Whether every predictor of ``program`` has its own LM set (``program.set_lm(lm)``)."""
    return all(predictor.lm for predictor in program.predictors())


def copy_program_with_lms(program: Module) -> Module:
    """A deep copy whose predictors keep the very LM objects of the original's."""
    lms = [predictor.lm for predictor in program.predictors()]
    program = program.deepcopy()
    for predictor, lm in zip(program.predictors(), lms, strict=True):
        predictor.lm = lm
    return program


def prepare_student(student: Module) -> Module:
    if getattr(student, "_compiled", False):
        raise ValueError("The student program should not be compiled.")
    return student


def prepare_teacher(student: Module, teacher: Module | None = None) -> Module:
    if teacher is None:
        return student
    assert_structural_equivalency(student, teacher)
    assert_no_shared_predictor(student, teacher)
    return teacher


def assert_structural_equivalency(program1: Any, program2: Any) -> None:
    if not isinstance(program1, Module) or not isinstance(program2, Module):
        raise TypeError("structurally equivalent programs must both be dspy.Module instances")
    num1, num2 = len(program1.predictors()), len(program2.predictors())
    if num1 != num2:
        raise ValueError(
            "Structurally equivalent programs must have the same number of predictors. The number of "
            f"predictors for the two modules do not match: {num1} != {num2}"
        )
    pairs = zip(program1.named_predictors(), program2.named_predictors(), strict=True)
    for index, ((name1, pred1), (name2, pred2)) in enumerate(pairs):
        if name1 != name2:
            raise ValueError(
                "Program predictor names must match at corresponding indices for structural equivalency. "
                f"The predictor names for the programs do not match at index {index}: '{name1}' != '{name2}'"
            )
        if not isinstance(pred1, Predict) or not isinstance(pred2, Predict):
            raise TypeError(f"predictor {name1!r} must be a dspy.Predict in both programs")


def assert_no_shared_predictor(program1: Module, program2: Module) -> None:
    names1 = {id(p): n for n, p in program1.named_predictors()}
    names2 = {id(p): n for n, p in program2.named_predictors()}
    shared = set(names1) & set(names2)
    if shared:
        raise ValueError(
            "The programs share the following predictor(s) with each other: "
            + ", ".join(names1[i] for i in shared)
        )


def get_unique_lms(program: Module) -> list[Any]:
    unique: dict[int, Any] = {}
    for predictor in program.predictors():
        if predictor.lm is not None:
            unique.setdefault(id(predictor.lm), predictor.lm)
    return list(unique.values())


def launch_lms(program: Module) -> None:
    """Start the program's LMs that need starting (an LM with ``launch()``)."""
    for lm in get_unique_lms(program):
        launch = getattr(lm, "launch", None)
        if callable(launch):
            launch()


def kill_lms(program: Module) -> None:
    """Stop the program's LMs that need stopping (an LM with ``kill()``)."""
    for lm in get_unique_lms(program):
        kill = getattr(lm, "kill", None)
        if callable(kill):
            kill()
