"""LabeledFewShot: every predictor gets ``k`` training examples as demos, sampled with a fixed seed."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from dspylite.example import Example
from dspylite.optimizers._compile import PromptOptimizer
from dspylite.optimizers._eval import Metric, check_positive
from dspylite.run_dir import RunDir

logger = logging.getLogger(__name__)


def fits(signature: Any, example: Example) -> bool:
    """Whether a labeled example can be a demo of this signature: all its inputs, at least one output.

    In a multi-step program the dataset's labels rarely cover every step (a middle step's inputs are
    another step's outputs); such examples are left out of that step's demos instead of failing it.
    """
    return all(k in example for k in signature.input_fields) and any(
        k in example for k in signature.output_fields
    )


def labeled_demos(
    trainset: list[Example], k: int, rng: random.Random, *, sample: bool = True
) -> list[Example]:
    chosen = rng.sample(trainset, min(k, len(trainset))) if sample else trainset[:k]
    return [ex.copy() for ex in chosen]


def attach_labeled(
    program: Any, trainset: list[Example], k: int, *, seed: int = 0, sample: bool = True
) -> Any:
    """Set up to ``k`` labeled demos on every predictor of ``program`` (in place), one seeded draw each."""
    rng = random.Random(seed)
    for name, predictor in program.named_predictors():
        usable = [ex for ex in trainset if fits(predictor.signature, ex)]
        if not usable:
            logger.info(
                "no training example has the fields of predictor %r (%s); it gets no labeled demos",
                name,
                predictor.signature.signature,
            )
        predictor.demos = labeled_demos(usable, k, rng, sample=sample)
    return program


class LabeledFewShot(PromptOptimizer):
    """``LabeledFewShot(k=16).compile(student, trainset=...)`` -> a copy with ``k`` demos per predictor.

    No LM calls. With ``metric`` and a ``valset`` the program is scored before and after, and with
    ``run_dir`` the program and a report are written there.
    """

    def __init__(
        self,
        k: int = 16,
        *,
        seed: int = 0,
        metric: Metric | None = None,
        run_dir: str | Path | RunDir | None = None,
        num_threads: int = 8,
        max_lm_calls: int | None = None,
        progress: bool = True,
    ):
        check_positive(k, "LabeledFewShot k")
        self.k = k
        self.seed = seed
        self.metric = metric
        self.run_dir = run_dir
        self.num_threads = num_threads
        self.max_lm_calls = max_lm_calls
        self.progress = progress
        self.summary: dict[str, Any] = {}

    def compile(
        self,
        student: Any,
        *,
        trainset: list[Example],
        valset: list[Example] | None = None,
        teacher: Any = None,
        sample: bool = True,
    ) -> Any:
        # The teacher plays no part here, so it is not fingerprinted either.
        trainset, valset = self.checked_data(student, trainset, valset)
        opened = self.start_run(student, trainset, valset, None, {**self._options(), "sample": sample})
        program = attach_labeled(student.deepcopy(), trainset, self.k, seed=self.seed, sample=sample)
        program._compiled = True
        before = after = None
        if self.metric is not None and valset:
            before = opened.scorer.evaluate(student, valset, desc="Evaluate student").score
            after = opened.scorer.evaluate(program, valset, desc="Evaluate compiled").score
        rows = [
            {
                "trial": 0,
                "candidate": "student as given",
                "demos": sum(len(p.demos) for p in student.predictors()),
                "score": before,
            },
            {
                "trial": 1,
                "candidate": f"{self.k} labeled demos per predictor",
                "demos": sum(len(p.demos) for p in program.predictors()),
                "score": after,
            },
        ]
        logger.info(
            "LabeledFewShot: %d demos per predictor (score before %s, after %s)", self.k, before, after
        )
        return self.finish_compile(
            opened,
            program,
            summary={"k": self.k, "score_before": before, "score_after": after},
            trial_rows=rows,
            columns=["trial", "candidate", "demos", "score"],
            series={"valset score": ([0, 1], [before, after])} if before is not None else None,
        )

    def _options(self) -> dict[str, Any]:
        return {"k": self.k, "seed": self.seed}
