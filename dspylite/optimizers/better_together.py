"""BetterTogether: alternate prompt optimization (p) and weight optimization (w) on one program.

    bt = BetterTogether(metric, prompt_optimizer=BootstrapFewShot(metric=metric),
                        weight_optimizer=BootstrapFinetune(metric, server=server, model_path=...))
    best = bt.compile(program, trainset=train, valset=val, strategy="p -> w -> p")

Each stage's program (with its adapter binding), its held-out score and its timing are written to
``run_dir/stages/NN-<label>/``; a rerun with the same run directory skips finished stages.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspylite.errors import OptimizerError
from dspylite.evaluate import Evaluate
from dspylite.example import Example
from dspylite.run_dir import RunDir, line_plot, markdown_table

logger = logging.getLogger(__name__)

STEP_NAMES = {"p": "prompt", "w": "weights"}


@dataclass
class StageResult:
    index: int
    label: str  # e.g. "baseline", "p", "p -> w"
    score: float
    program_path: str
    bindings: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def parse_strategy(strategy: str) -> list[str]:
    steps = [s.strip() for s in strategy.split("->")]
    bad = [s for s in steps if s not in STEP_NAMES]
    if not steps or bad:
        raise OptimizerError(
            f"strategy {strategy!r}: steps must be 'p' or 'w' separated by '->', got {bad or steps}"
        )
    return steps


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
    ):
        self.metric = metric
        self.prompt_optimizer = prompt_optimizer
        self.weight_optimizer = weight_optimizer
        self.valset_ratio = valset_ratio
        self.num_threads = num_threads
        self.seed = seed
        self.run_dir = run_dir if isinstance(run_dir, RunDir) or run_dir is None else RunDir(run_dir)
        self.stages: list[StageResult] = []

    def compile(
        self,
        student: Any,
        *,
        trainset: list[Example],
        valset: list[Example] | None = None,
        strategy: str = "p -> w -> p",
    ) -> Any:
        steps = parse_strategy(strategy)
        if not trainset:
            raise OptimizerError("BetterTogether.compile: trainset is empty")
        for step in steps:
            optimizer = self.prompt_optimizer if step == "p" else self.weight_optimizer
            if optimizer is None:
                raise OptimizerError(
                    f"strategy {strategy!r} has a '{step}' step but no {STEP_NAMES[step]}_optimizer"
                )
        trainset, valset = self._split(trainset, valset)
        run = self.run_dir or RunDir.new("runs", f"better-together-{time.strftime('%Y%m%d-%H%M%S')}")
        evaluate = Evaluate(
            devset=valset, metric=self.metric, num_threads=self.num_threads, display_progress=True
        )
        done = {s["label"]: s for s in (run.load_json("stages.json", []) or [])}

        program = student.deepcopy()
        self.stages = []
        label = "baseline"
        program = self._stage(run, 0, label, program, None, evaluate, done, trainset, valset)
        for i, step in enumerate(steps, start=1):
            label = step if i == 1 else f"{label} -> {step}"
            program = self._stage(run, i, label, program, step, evaluate, done, trainset, valset)

        best = max(self.stages, key=lambda s: (s.score, -s.index))
        logger.info("BetterTogether: best stage %r with held-out score %.2f", best.label, best.score)
        best_program = student.deepcopy()
        best_program.load(best.program_path)
        best_program.save(run.program_path)
        self._report(run, best)
        return best_program

    # ---- stages ----------------------------------------------------------------------------------
    def _stage(
        self,
        run: RunDir,
        index: int,
        label: str,
        program: Any,
        step: str | None,
        evaluate: Evaluate,
        done: dict[str, Any],
        trainset: list[Example],
        valset: list[Example],
    ) -> Any:
        stage_dir = run.path / "stages" / f"{index:02d}-{label.replace(' -> ', '-')}"
        if label in done and Path(done[label]["program_path"]).exists():
            logger.info("BetterTogether: stage %r already finished; loading it", label)
            program.load(done[label]["program_path"])
            self._serve_bound_adapters(program, run)
            self.stages.append(StageResult(**done[label]))
            return program
        start = time.time()
        if step == "p":
            program = self.prompt_optimizer.compile(program, trainset=trainset, valset=valset)
        elif step == "w":
            program = self.weight_optimizer.compile(program, trainset=trainset)
        score = evaluate(program).score
        program_path = program.save(stage_dir / "program.json")
        bindings = {
            name: getattr(p.lm, "model", None) for name, p in program.named_predictors() if p.lm is not None
        }
        result = StageResult(index, label, score, str(program_path), bindings, round(time.time() - start, 2))
        self.stages.append(result)
        run.log_metrics(step=index, stage=label, val_score=score, seconds=result.seconds)
        run.save_json("stages.json", [s.__dict__ for s in self.stages])
        logger.info("BetterTogether: stage %r scored %.2f on the held-out split", label, score)
        return program

    def _serve_bound_adapters(self, program: Any, run: RunDir) -> None:
        """A resumed run may face a fresh server: load the adapters the restored program is bound to."""
        server = getattr(self.weight_optimizer, "server", None)
        if server is None or not any(p.lm is not None for _, p in program.named_predictors()):
            return
        from dspylite.jobs.common import ensure_adapters_served

        registry = getattr(self.weight_optimizer, "_registry", None)
        roots = [run.path] + ([Path(registry.root)] if registry is not None else [])
        for root in roots:
            try:
                ensure_adapters_served(program, server, search_root=root)
                return
            except Exception as exc:  # try the next root; the last failure is raised below
                error = exc
        raise error

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

    def _report(self, run: RunDir, best: StageResult) -> None:
        rows = [
            {
                "stage": s.label,
                "held-out score": s.score,
                "seconds": s.seconds,
                "adapter": ", ".join(sorted({m for m in s.bindings.values() if m})) or "-",
            }
            for s in self.stages
        ]
        fig = line_plot(
            {"held-out score": (list(range(len(self.stages))), [s.score for s in self.stages])},
            title="BetterTogether stages",
            xlabel="stage",
            ylabel="score (%)",
        )
        run.write_report(
            "BetterTogether",
            [("Stages", markdown_table(rows)), ("Best", f"`{best.label}` with {best.score:.2f}")],
            figure=fig,
        )
