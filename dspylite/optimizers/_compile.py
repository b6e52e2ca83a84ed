"""How every prompt optimizer's ``compile`` opens and closes, written once.

    class BootstrapFewShot(PromptOptimizer):
        def compile(self, student, *, trainset, valset=None, teacher=None):
            opened = self.open_compile(student, trainset, valset, teacher)
            ...                                    # opened.run, opened.scorer, opened.valset
            return self.finish_compile(opened, compiled, summary={...}, trial_rows=[...], columns=[...])

The opening checks the data and the student (``checked_data``), then starts the run (``start_run``):
its directory is fingerprinted by the optimizer's options, the data, the student and the teacher, so
that a resume with anything else fails loudly instead of mixing trials, and its scorer spends the
run's LM budget and keeps its scores in the run's cache. MIPROv2 and GEPA take the two steps apart,
deriving their valset and budget from the checked data in between. The closing fills ``summary``
with the cost and health fields every report shows, saves the program and writes the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from dspylite.errors import OptimizerError
from dspylite.example import Example
from dspylite.optimizers._eval import (
    Metric,
    ProgramScorer,
    always_pass,
    check_examples,
    examples_key,
    program_key,
)
from dspylite.optimizers._run import OptimizerRun
from dspylite.run_dir import RunDir
from dspylite.teleprompt.teleprompt import Teleprompter


@dataclass
class OpenedCompile:
    """One ``compile`` under way: its checked data, its run, and (made when first used) its scorer."""

    trainset: list[Example]
    valset: list[Example] | None
    run: OptimizerRun
    metric: Metric
    num_threads: int
    progress: bool

    @cached_property
    def scorer(self) -> ProgramScorer:
        return self.run.make_scorer(self.metric, num_threads=self.num_threads, progress=self.progress)


class PromptOptimizer(Teleprompter):
    """The base of dspylite's prompt optimizers. A subclass's ``__init__`` sets ``metric``, ``run_dir``,
    ``max_lm_calls``, ``num_threads`` and ``progress``, and ``_options`` returns what its run is
    fingerprinted by (the settings that change its result)."""

    metric: Metric | None
    run_dir: str | Path | RunDir | None
    max_lm_calls: int | None
    num_threads: int
    progress: bool
    summary: dict[str, Any]

    def _options(self) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must say which options its run is fingerprinted by")

    def checked_data(
        self, student: Any, trainset: Any, valset: Any, *, valset_from_trainset: bool = False
    ) -> tuple[list[Example], list[Example] | None]:
        """``trainset`` and ``valset`` as checked lists (no valset: the trainset where
        ``valset_from_trainset``, else None); a student without predictors is refused."""
        trainset = check_examples(trainset, "trainset")
        if valset is not None:
            valset = check_examples(valset, "valset")
        elif valset_from_trainset:
            valset = trainset
        if not student.predictors():
            raise OptimizerError(f"the student program {type(student).__name__} has no predictors")
        return trainset, valset

    def start_run(
        self,
        student: Any,
        trainset: list[Example],
        valset: list[Example] | None,
        teacher: Any,
        options: dict[str, Any] | None = None,
    ) -> OpenedCompile:
        """The run of this compile (``options``: the fingerprinted options, by default ``_options()``)."""
        options = self._options() if options is None else options
        run = OptimizerRun(
            self.run_dir,
            optimizer=type(self).__name__,
            config=options,
            max_lm_calls=self.max_lm_calls,
            fingerprint={
                **options,
                "trainset": examples_key(trainset),
                "valset": examples_key(valset) if valset else None,
                "student": program_key(student),
                "teacher": program_key(teacher) if teacher is not None else None,
            },
        )
        return OpenedCompile(
            trainset, valset, run, self.metric or always_pass, self.num_threads, self.progress
        )

    def open_compile(
        self, student: Any, trainset: Any, valset: Any, teacher: Any, *, valset_from_trainset: bool = False
    ) -> OpenedCompile:
        """``checked_data`` then ``start_run``: the whole opening, where the options do not depend on the data."""
        trainset, valset = self.checked_data(
            student, trainset, valset, valset_from_trainset=valset_from_trainset
        )
        return self.start_run(student, trainset, valset, teacher)

    def finish_compile(
        self,
        opened: OpenedCompile,
        program: Any,
        *,
        summary: dict[str, Any],
        trial_rows: list[dict[str, Any]],
        columns: list[str],
        series: dict[str, tuple[list[float], list[float]]] | None = None,
        extra: list[tuple[str, str]] = (),
        not_in_report: tuple[str, ...] = (),
    ) -> Any:
        """``self.summary`` (the optimizer's name, ``summary``, then the run's cost and health fields,
        the same keys in the same order for every optimizer), the program and the report written;
        returns ``program``. The report leaves out the warnings (it has a section of its own for them)
        and the ``not_in_report`` keys."""
        run = opened.run
        self.summary = {"optimizer": type(self).__name__, **summary, **run.summary_fields(opened.scorer)}
        run.save_program(program)
        hidden = ("warnings", *not_in_report)
        run.write_report(
            summary={k: v for k, v in self.summary.items() if k not in hidden},
            trial_rows=trial_rows,
            columns=columns,
            series=series,
            extra=extra,
        )
        return program
