"""BetterTogether: alternate prompt optimization and weight optimization on one program.

    bt = BetterTogether(metric, prompt_optimizer=BootstrapFewShot(metric=metric),
                        weight_optimizer=BootstrapFinetune(metric, server=server))
    best = bt.compile(program, trainset=train, valset=val, strategy="p -> w -> p")

DSPy's newer keyword form works too: ``BetterTogether(metric, p=GEPA(...), w=BootstrapFinetune(...))``;
every key names a step the strategy may use. ``prompt_optimizer`` is step ``p`` and
``weight_optimizer`` step ``w``.

Each stage is one ``StageRecord`` (program file, the adapters it is bound to, held-out scores, time)
in ``run_dir/stages.json``; a rerun with the same run directory skips finished stages and re-serves
their adapters from the records. Weight steps are ``WeightOptimizer`` instances, read through that
type only (``backend``, ``published``).
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

from dspylite.errors import OptimizerError
from dspylite.evaluate import Evaluate
from dspylite.example import Example
from dspylite.optimizers.stages import StageRecord, load_stages, save_stages
from dspylite.optimizers.weights import WeightOptimizer
from dspylite.run_dir import RunDir

logger = logging.getLogger(__name__)

STEP_ALIASES = {"prompt_optimizer": "p", "weight_optimizer": "w"}
SELECTION_SPLIT = "val"  # the split name a stage's held-out scores are recorded under


def parse_strategy(strategy: str, steps: set[str] | None = None) -> list[str]:
    """``"p -> w -> p"`` -> ``["p", "w", "p"]``; each step must be one of ``steps`` (default p and w)."""
    allowed = steps if steps is not None else {"p", "w"}
    parsed = [s.strip() for s in strategy.split("->")]
    bad = [s for s in parsed if s not in allowed]
    if not parsed or bad:
        raise OptimizerError(
            f"strategy {strategy!r}: steps must be among {sorted(allowed)} separated by '->', got {bad or parsed}"
        )
    return parsed


class BetterTogether:
    def __init__(
        self,
        metric: Any,
        *,
        prompt_optimizer: Any = None,
        weight_optimizer: Any = None,
        valset_ratio: float = 0.2,
        num_threads: int = 8,
        seed: int = 0,
        run_dir: str | Path | RunDir | None = None,
        **optimizers: Any,
    ):
        self.metric = metric
        self.optimizers: dict[str, Any] = {}
        if prompt_optimizer is not None:
            self.optimizers["p"] = prompt_optimizer
        if weight_optimizer is not None:
            self.optimizers["w"] = weight_optimizer
        for key, optimizer in optimizers.items():
            if not hasattr(optimizer, "compile"):
                raise OptimizerError(
                    f"BetterTogether: {key}= must be an optimizer with compile(), got {optimizer!r}"
                )
            self.optimizers[key] = optimizer
        self.valset_ratio = valset_ratio
        self.num_threads = num_threads
        self.seed = seed
        self.run_dir = run_dir if isinstance(run_dir, RunDir) or run_dir is None else RunDir(run_dir)
        self.stages: list[StageRecord] = []

    @property
    def prompt_optimizer(self) -> Any:
        return self.optimizers.get("p")

    @property
    def weight_optimizer(self) -> Any:
        return self.optimizers.get("w")

    def compile(
        self,
        student: Any,
        *,
        trainset: list[Example],
        valset: list[Example] | None = None,
        strategy: str = "p -> w -> p",
    ) -> Any:
        steps = parse_strategy(strategy, set(self.optimizers) | {"p", "w"})
        if not trainset:
            raise OptimizerError("BetterTogether.compile: trainset is empty")
        missing = [s for s in steps if s not in self.optimizers]
        if missing:
            raise OptimizerError(
                f"strategy {strategy!r} uses step(s) {sorted(set(missing))} but no optimizer was given for "
                "them (prompt_optimizer= is 'p', weight_optimizer= is 'w')"
            )
        trainset, valset = self._split(trainset, valset)
        run = self.run_dir or RunDir.new("runs", f"better-together-{time.strftime('%Y%m%d-%H%M%S')}")
        evaluate = Evaluate(
            devset=valset,
            metric=self.metric,
            num_threads=self.num_threads,
            display_progress=True,
            raise_if_all_failed=False,  # a stage that breaks the format scores 0 and is not picked
        )
        done = {r.name: r for r in load_stages(run.path)}

        program = student.deepcopy()
        self.stages = []
        label = "baseline"
        program = self._stage(run, 0, label, program, None, evaluate, done, trainset, valset)
        for i, step in enumerate(steps, start=1):
            label = step if i == 1 else f"{label} -> {step}"
            program = self._stage(run, i, label, program, step, evaluate, done, trainset, valset)

        best = self.best_stage()
        logger.info(
            "BetterTogether: best stage %r with held-out score %.3f", best.name, best.mean(SELECTION_SPLIT)
        )
        best_program = student.deepcopy()
        best_program.load(best.program_path)
        best_program.save(run.program_path)
        self._report(run, best)
        return best_program

    def best_stage(self) -> StageRecord:
        """The stage with the highest held-out score; the earliest one on a tie."""
        return max(self.stages, key=lambda s: (s.mean(SELECTION_SPLIT), -s.index))

    # ---- stages ----------------------------------------------------------------------------------
    def _stage(
        self,
        run: RunDir,
        index: int,
        label: str,
        program: Any,
        step: str | None,
        evaluate: Evaluate,
        done: dict[str, StageRecord],
        trainset: list[Example],
        valset: list[Example],
    ) -> Any:
        stage_dir = run.path / "stages" / f"{index:02d}-{label.replace(' -> ', '-')}"
        record = done.get(label)
        if record is not None and Path(record.program_path).exists():
            logger.info("BetterTogether: stage %r already finished; loading it", label)
            program.load(record.program_path)
            self._serve(program, record.adapters)
            self.stages.append(record)
            return program
        start = time.time()
        adapters = dict(self.stages[-1].adapters) if self.stages else {}
        if step is not None:
            optimizer = self.optimizers[step]
            self._serve(program, adapters)  # a resumed run may face a fresh server
            program = optimizer.compile(program, trainset=trainset, valset=valset)
            if isinstance(optimizer, WeightOptimizer):
                adapters.update(optimizer.published)
        result = evaluate(program)
        program_path = program.save(stage_dir / "program.json")
        bound = {getattr(p.lm, "model", None) for _, p in program.named_predictors() if p.lm is not None}
        record = StageRecord(
            name=label,
            program_path=str(program_path),
            adapters={k: v for k, v in adapters.items() if k in bound},
            scores={SELECTION_SPLIT: list(result.scores)},
            seconds=round(time.time() - start, 2),
            index=index,
        )
        self.stages.append(record)
        run.log_metrics(step=index, stage=label, val_score=result.score, seconds=record.seconds)
        save_stages(run.path, self.stages)
        logger.info("BetterTogether: stage %r scored %.2f on the held-out split", label, result.score)
        return program

    def _serve(self, program: Any, adapters: dict[str, str]) -> None:
        """Load the adapters ``program`` is bound to into the weight optimizers' backends."""
        if not any(p.lm is not None for _, p in program.named_predictors()):
            return
        for optimizer in self.optimizers.values():
            if isinstance(optimizer, WeightOptimizer) and optimizer.backend is not None:
                optimizer.backend.serve(program, adapters=adapters)

    def _split(
        self, trainset: list[Example], valset: list[Example] | None
    ) -> tuple[list[Example], list[Example]]:
        if valset:
            return list(trainset), list(valset)
        shuffled = list(trainset)
        random.Random(self.seed).shuffle(shuffled)
        n_val = max(1, int(len(shuffled) * self.valset_ratio))
        if len(shuffled) - n_val < 1:
            raise OptimizerError(
                f"trainset of {len(trainset)} examples is too small to hold out a validation split"
            )
        return shuffled[n_val:], shuffled[:n_val]

    def _report(self, run: RunDir, best: StageRecord) -> None:
        from dspylite.reporting import render_stage_report

        render_stage_report(run, self.stages, splits=[SELECTION_SPLIT], title="BetterTogether")
