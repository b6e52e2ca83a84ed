"""Reports drawn from a run directory's files alone (job.json, metrics.jsonl, stages.json, results.jsonl).

Jobs call ``render_report`` when they finish; ``dspylite report RUN_DIR`` calls it again later, e.g.
after a crash before the report, or after changing this code. Run directories of other jobs get a
generic report: the metrics table and a plot of every numeric metric per step.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dspylite.errors import ConfigError
from dspylite.jobs.common import JOB_FILE, RESULTS_FILE
from dspylite.run_dir import RunDir, markdown_table
from dspylite.utils.io import read_jsonl
from dspylite.utils.stats import paired_diff_ci

logger = logging.getLogger(__name__)

# Other packages' run directories, rendered by their own code when it offers a renderer.
EXTERNAL_RENDERERS = {"demo": "dspylite.demo:render_report"}
NEEDS_FINISHED_JOB = {"eval", "optimize"}  # their reports show final scores only a finished job has
GENERIC_PLOT_KEYS = 6  # at most this many metric curves in a generic report


def render_report(run_dir: str | Path) -> Path:
    """(Re)write ``report.md`` and ``report.png`` of ``run_dir``; returns the report's path."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ConfigError(f"run directory not found: {path}")
    run = RunDir(path)
    job = run.load_json(JOB_FILE, {}) or {}
    kind = job.get("kind") or _guess_kind(run)
    renderer = RENDERERS.get(kind) or _external_renderer(kind)
    if kind in NEEDS_FINISHED_JOB and job.get("status") != "done":
        logger.warning("%s: the %s job did not finish; writing a report of its metrics only", path, kind)
        renderer = None
    if renderer is None:
        if not run.metrics_path.exists() and not job:
            raise ConfigError(f"{path} is not a run directory: it has neither {JOB_FILE} nor metrics.jsonl")
        renderer = _generic
    renderer(run, job)
    return run.report_md


def _guess_kind(run: RunDir) -> str:
    stages = run.load_json("stages.json")
    if isinstance(stages, dict):
        return "demo"
    if isinstance(stages, list):
        return "better_together"
    return "generic"


def _external_renderer(kind: str) -> Callable[[RunDir, dict[str, Any]], None] | None:
    spec = EXTERNAL_RENDERERS.get(kind)
    if spec is None:
        return None
    module_name, _, attr = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return None
    return lambda run, job: function(run)


# ---- shared pieces ---------------------------------------------------------------------------------


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def score_cell(record: dict[str, Any]) -> str:
    """``61.0 [55.2, 66.4]``: the mean in percent with its 95% interval."""
    low, high = record["ci95"]
    return f"{_pct(record['mean'])} [{_pct(low)}, {_pct(high)}]"


def diff_cell(before: dict[str, Any], after: dict[str, Any]) -> str:
    a, b = before.get("scores") or [], after.get("scores") or []
    if not a or len(a) != len(b):
        return "-"
    diff, low, high = paired_diff_ci(a, b)
    return f"{100 * diff:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def _errors(record: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in (record.get("errors") or {}).items()) or "none"


def _score_rows(scores: dict[str, dict[str, dict[str, Any]]], baseline: str) -> list[dict[str, Any]]:
    rows = []
    for program, splits in scores.items():
        for split, record in splits.items():
            base = scores.get(baseline, {}).get(split)
            rows.append(
                {
                    "program": program,
                    "split": split,
                    "score % [95% CI]": score_cell(record),
                    f"vs {baseline} (paired)": diff_cell(base, record)
                    if base and program != baseline
                    else "-",
                    "n": record["n"],
                    "errors": _errors(record),
                }
            )
    return rows


def _figure(ncols: int, width: float = 6.0) -> tuple[Any, list[Any]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, 4))
    return fig, list(axes) if ncols > 1 else [axes]


def _grouped_bars(ax: Any, scores: dict[str, dict[str, dict[str, Any]]], title: str) -> None:
    programs = list(scores)
    splits = sorted({s for v in scores.values() for s in v}, key=["train", "dev", "test", "all"].index)
    width = 0.8 / max(1, len(splits))
    for j, split in enumerate(splits):
        xs, means, low, high = [], [], [], []
        for i, program in enumerate(programs):
            record = scores[program].get(split)
            if record is None:
                continue
            m = 100 * record["mean"]
            xs.append(i + (j - (len(splits) - 1) / 2) * width)
            means.append(m)
            # max(0, ...): a Wilson bound can sit a rounding error past the mean at 0% or 100%.
            low.append(max(0.0, m - 100 * record["ci95"][0]))
            high.append(max(0.0, 100 * record["ci95"][1] - m))
        ax.bar(xs, means, width=width, yerr=[low, high], capsize=4, label=split)
    ax.set_xticks(range(len(programs)))
    ax.set_xticklabels(programs)
    ax.set_ylim(0, 100)
    ax.set_ylabel("score % (95% CI)")
    ax.set_title(title)
    if len(splits) > 1:
        ax.legend()


def _write(run: RunDir, title: str, sections: list[tuple[str, str]], fig: Any) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    run.write_report(title, sections, figure=fig)
    plt.close(fig)


def _setup(job: dict[str, Any], keys: list[str]) -> str:
    return markdown_table([{"": k, "value": job[k]} for k in keys if k in job], ["", "value"])


# ---- eval ------------------------------------------------------------------------------------------


def _eval(run: RunDir, job: dict[str, Any]) -> None:
    record = job["score"]
    split = job.get("split", "?")
    rows = [
        {
            "split": split,
            "score % [95% CI]": score_cell(record),
            "n": record["n"],
            "errors": _errors(record),
        }
    ]
    examples = read_jsonl(run.path / RESULTS_FILE)
    sample = [
        {
            "id": r.get("id"),
            "score": r.get("score"),
            "error": r.get("error_kind") or "",
            "prediction": str(r.get("prediction"))[:100],
        }
        for r in examples[:20]
    ]
    fig, (bars, errors) = _figure(2, 5.0)
    _grouped_bars(
        bars, {job.get("program", "program"): {split: record}}, f"{job.get('task', '')} {split} score"
    )
    counts = record.get("errors") or {}
    ok = record["n"] - sum(counts.values())
    errors.bar(["ok", *counts], [ok, *counts.values()], color=["#4c9a2a", *["#c0392b"] * len(counts)])
    errors.set_title("examples by outcome")
    errors.set_ylabel("examples")
    sections = [
        ("Score", markdown_table(rows)),
        ("Setup", _setup(job, ["task", "program", "program_path", "model", "seconds", "usage"])),
        (f"First examples (all in {RESULTS_FILE})", markdown_table(sample) if sample else "(none)"),
    ]
    _write(
        run, f"Evaluation: {job.get('program', 'program')} on {job.get('task', '?')} ({split})", sections, fig
    )


# ---- optimize --------------------------------------------------------------------------------------


def _optimize(run: RunDir, job: dict[str, Any]) -> None:
    from dspylite.jobs.optimize_job import OPTIMIZER_DIR

    scores = job["scores"]
    trials = [r for r in read_jsonl(run.path / OPTIMIZER_DIR / "metrics.jsonl") if r.get("score") is not None]
    fig, axes = _figure(2 if trials else 1)
    _grouped_bars(axes[0], scores, f"{job.get('optimizer')}: baseline vs optimized")
    if trials:
        axes[1].plot(range(1, len(trials) + 1), [r["score"] for r in trials], marker="o")
        axes[1].set_xlabel("optimizer evaluation")
        axes[1].set_ylabel("score % (selection split)")
        axes[1].set_title("scores seen while optimizing")
        axes[1].grid(alpha=0.3)
    demos = job.get("demos") or {}
    sections = [
        ("Scores", markdown_table(_score_rows(scores, "baseline"))),
        (
            "Optimizer",
            f"{job.get('optimizer')} on {job.get('n_train')} train examples; demos per predictor: {demos}. "
            f"Its trials and report: [{OPTIMIZER_DIR}/report.md]({OPTIMIZER_DIR}/report.md).",
        ),
        ("Setup", _setup(job, ["task", "program", "model", "seconds", "usage"])),
    ]
    _write(run, f"{job.get('optimizer')} on {job.get('task', '?')}", sections, fig)


# ---- better together -------------------------------------------------------------------------------


def _better_together(run: RunDir, job: dict[str, Any]) -> None:
    stages = run.load_json("stages.json", []) or []
    scores = job.get("scores") or {}
    stage_rows = [
        {
            "stage": s["label"],
            "held-out score %": f"{s['score']:.1f}",
            "adapter": ", ".join(sorted({m for m in (s.get("bindings") or {}).values() if m})) or "-",
            "seconds": s.get("seconds", 0.0),
        }
        for s in stages
    ]
    fig, axes = _figure(2 if scores else 1)
    if stages:
        axes[0].plot(range(len(stages)), [s["score"] for s in stages], marker="o")
        axes[0].set_xticks(range(len(stages)))
        axes[0].set_xticklabels([s["label"] for s in stages], rotation=15)
    axes[0].set_ylabel("held-out dev score %")
    axes[0].set_title(f"BetterTogether stages ({job.get('strategy', '?')})")
    axes[0].grid(alpha=0.3)
    if scores:
        _grouped_bars(axes[1], scores, "baseline vs best stage")
    sections = [("Stages", markdown_table(stage_rows))]
    if scores:
        sections.append(("Baseline vs best", markdown_table(_score_rows(scores, "baseline"))))
    sections.append(
        (
            "Setup",
            _setup(
                job,
                [
                    "strategy",
                    "weights",
                    "prompt_optimizer",
                    "best_stage",
                    "task",
                    "model",
                    "n_train",
                    "n_val",
                    "seconds",
                ],
            ),
        )
    )
    _write(run, f"BetterTogether on {job.get('task', '?')}", sections, fig)


# ---- anything else ---------------------------------------------------------------------------------


def _generic(run: RunDir, job: dict[str, Any]) -> None:
    rows = run.metrics()
    scalar_rows = [
        {k: v for k, v in row.items() if k != "time" and isinstance(v, (int, float, str, bool))}
        for row in rows
    ]
    columns = sorted({k for row in scalar_rows for k in row}, key=lambda k: (k not in ("step", "phase"), k))
    series: dict[str, tuple[list[float], list[float]]] = {}
    for row in rows:
        if not isinstance(row.get("step"), (int, float)):
            continue
        for key, value in row.items():
            if key in ("step", "time") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            xs, ys = series.setdefault(key, ([], []))
            xs.append(row["step"])
            ys.append(value)
    keep = sorted(series, key=lambda k: -len(series[k][0]))[:GENERIC_PLOT_KEYS]
    fig, (ax,) = _figure(1, 7.0)
    for key in keep:
        ax.plot(*series[key], marker=".", label=key)
    ax.set_xlabel("step")
    ax.set_title("metrics per step" if keep else "no per-step metrics")
    ax.grid(alpha=0.3)
    if keep:
        ax.legend()
    sections = [
        (
            f"Metrics (last 30 of {len(rows)} rows in metrics.jsonl)",
            markdown_table(scalar_rows[-30:], columns),
        ),
    ]
    if job:
        sections.append(
            ("Job", markdown_table([{"": k, "value": str(v)[:200]} for k, v in job.items()], ["", "value"]))
        )
    _write(run, f"Run {run.path.name}", sections, fig)


RENDERERS: dict[str, Callable[[RunDir, dict[str, Any]], None]] = {
    "eval": _eval,
    "optimize": _optimize,
    "better_together": _better_together,
}
