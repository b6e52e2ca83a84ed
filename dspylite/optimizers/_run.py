"""An optimizer run's memory: finished trials, cached scores, budget, best program and the report.

With a run directory everything is on disk as it happens (trials.jsonl and eval_cache.jsonl are
appended and fsync'd, program files are written atomically), so compiling again with the same
directory after a kill replays the finished trials instead of re-running them. A run directory
written by a different optimizer setup is refused rather than silently mixed in.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from dspylite.errors import OptimizerError
from dspylite.optimizers._eval import LMBudget, Metric, ProgramScorer, ScoreCache
from dspylite.reporting import line_plot, markdown_table
from dspylite.run_dir import RunDir
from dspylite.utils.io import append_jsonl, read_jsonl

logger = logging.getLogger(__name__)

STATE_FILE = "optimizer_state.json"
TRIALS_FILE = "trials.jsonl"
SCORE_CACHE_FILE = "eval_cache.jsonl"


class OptimizerRun:
    def __init__(
        self,
        run_dir: str | Path | RunDir | None,
        *,
        optimizer: str,
        fingerprint: dict[str, Any],
        config: dict[str, Any],
        max_lm_calls: int | None,
    ):
        self.optimizer = optimizer
        fingerprint = json.loads(
            json.dumps(fingerprint, default=str)
        )  # compare like with like after a reload
        self.dir: RunDir | None = (
            run_dir if isinstance(run_dir, RunDir) else (RunDir(run_dir) if run_dir is not None else None)
        )
        self.rows: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.started = time.perf_counter()
        used = 0
        if self.dir is not None:
            state = self.dir.load_json(STATE_FILE)
            if state is not None:
                _check_same_setup(self.dir.path / STATE_FILE, state, optimizer, fingerprint)
            self.rows = read_jsonl(self.dir.path / TRIALS_FILE)
            used = max((int(r.get("lm_calls", 0)) for r in self.rows), default=0)
            self.dir.save_json(STATE_FILE, {"optimizer": optimizer, "fingerprint": fingerprint})
            self.dir.write_config({"optimizer": optimizer, **config})
            if self.rows:
                logger.info(
                    "%s: resuming from %s (%d finished trial rows, %d LM calls already spent)",
                    optimizer,
                    self.dir.path,
                    len(self.rows),
                    used,
                )
        self.resumed = bool(self.rows)
        self.budget = LMBudget(max_lm_calls, already_used=used)
        if self.budget.exhausted:
            self.warn(
                f"the LM-call budget (max_lm_calls={max_lm_calls}) was already spent before this resume"
            )
        self.score_cache = ScoreCache(self.dir.path / SCORE_CACHE_FILE if self.dir is not None else None)

    def make_scorer(self, metric: Metric, *, num_threads: int, progress: bool) -> ProgramScorer:
        """A scorer that spends this run's LM budget and keeps its scores in this run's cache.

        Sharing the cache is what lets a resumed run skip evaluations it already paid for.
        """
        return ProgramScorer(
            metric,
            budget=self.budget,
            cache=self.score_cache,
            num_threads=num_threads,
            progress=progress,
        )

    # ---- trials -------------------------------------------------------------------------------------
    def done(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [
            r for r in self.rows if r.get("kind") == kind and all(r.get(k) == v for k, v in match.items())
        ]

    def record(self, row: dict[str, Any]) -> dict[str, Any]:
        row = {
            **row,
            "lm_calls": self.budget.calls,
            "elapsed_s": round(time.perf_counter() - self.started, 3),
        }
        self.rows.append(row)
        if self.dir is not None:
            append_jsonl(self.dir.path / TRIALS_FILE, row)
            if row.get("score") is not None:
                self.dir.log_metrics(
                    step=len(self.rows), kind=row.get("kind"), score=row["score"], lm_calls=row["lm_calls"]
                )
        return row

    # ---- programs -------------------------------------------------------------------------------------
    def save_program(self, program: Any, name: str = "program.json") -> None:
        if self.dir is not None:
            program.save(self.dir.path / name)

    def save_candidate(self, name: str, program: Any) -> None:
        if self.dir is not None:
            program.save(self.dir.checkpoints_dir / f"{name}.json")

    def load_candidate(self, name: str, template: Any) -> Any | None:
        """``template``'s copy with the saved state of candidate ``name``, or None if not saved."""
        if self.dir is None:
            return None
        path = self.dir.checkpoints_dir / f"{name}.json"
        if not path.exists():
            return None
        program = template.deepcopy()
        program.load(path)
        return program

    def save_json(self, name: str, data: Any) -> None:
        if self.dir is not None:
            self.dir.save_json(name, data)

    def load_json(self, name: str) -> Any:
        return self.dir.load_json(name) if self.dir is not None else None

    # ---- reporting ----------------------------------------------------------------------------------
    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            logger.warning("%s: %s", self.optimizer, message)

    @property
    def elapsed_s(self) -> float:
        return round(time.perf_counter() - self.started, 2)

    def summary_fields(self, scorer: ProgramScorer) -> dict[str, Any]:
        """The cost and health part of an optimizer's summary (errors, LM calls, cache, resume, time, warnings).

        BootstrapFewShot, random search and MIPROv2 all end their ``summary`` with these keys, in
        this order, so their reports and summaries read alike.
        """
        return {
            "errors": dict(scorer.error_counts),
            **self.budget.summary(),
            "cached_scores": scorer.cache.hits,
            "resumed": self.resumed,
            "wall_s": self.elapsed_s,
            "warnings": list(self.warnings),
        }

    def write_report(
        self,
        *,
        summary: dict[str, Any],
        trial_rows: list[dict[str, Any]],
        columns: list[str],
        series: dict[str, tuple[list[float], list[float]]] | None = None,
        extra: list[tuple[str, str]] = (),
    ) -> Path | None:
        if self.dir is None:
            return None
        sections = [
            ("Summary", markdown_table([{"": k, "value": v} for k, v in summary.items()], ["", "value"]))
        ]
        if self.warnings:
            sections.append(("Warnings", "\n".join(f"- **warning:** {w}" for w in self.warnings)))
        sections.extend(extra)
        sections.append(("Trials", markdown_table(trial_rows, columns)))
        figure = None
        if series and any(xs for xs, _ in series.values()):
            figure = line_plot(
                series, title=f"{self.optimizer}: score per trial", xlabel="trial", ylabel="score (%)"
            )
        path = self.dir.write_report(f"{self.optimizer} report", sections, figure=figure)
        if figure is not None:
            import matplotlib.pyplot as plt

            plt.close(figure)
        return path


def trial_bar(total: int, desc: str, *, show: bool, initial: int = 0) -> Any:
    """A progress bar over an optimizer's trials, or None when progress is off.

    ``initial`` counts the trials a resumed run replays, so the bar shows the whole search.
    """
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)


def _check_same_setup(path: Path, state: dict[str, Any], optimizer: str, fingerprint: dict[str, Any]) -> None:
    saved = state.get("fingerprint", {})
    if state.get("optimizer") != optimizer:
        raise OptimizerError(
            f"run directory {path.parent} belongs to {state.get('optimizer')}, not {optimizer}; "
            "use a new run_dir"
        )
    changed = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
    if changed:
        raise OptimizerError(
            f"run directory {path.parent} was started with different settings ({', '.join(changed)} differ, "
            f"see {path.name}); resume with the same program, data and options, or use a new run_dir"
        )


def fingerprint_value(value: Any) -> Any:
    """JSON-stable form of an option for the fingerprint (callables by name, objects by type)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): fingerprint_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [fingerprint_value(v) for v in value]
    if hasattr(value, "model"):
        return f"{type(value).__name__}({getattr(value, 'model', '')})"
    return type(value).__name__
