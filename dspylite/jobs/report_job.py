"""Reports drawn from a run directory's files alone (job.json, metrics.jsonl, stages.json, results.jsonl).

Jobs render their report when they finish (``JobSession.finish``); ``dspylite report RUN_DIR`` renders
it again later, e.g. after a crash before the report, or after changing this code. Every cell, table
and chart comes from ``dspylite.reporting``. Run directories of other jobs get a generic report: the
metrics table and a plot of every numeric metric per step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dspylite.errors import ConfigError
from dspylite.optimizers.stages import load_stages
from dspylite.reporting import (
    diff_cell,
    errors_cell,
    grouped_bars,
    markdown_table,
    new_figure,
    render_stage_report,
    score_cell,
    write_report,
)
from dspylite.run_dir import RunDir
from dspylite.utils.io import read_jsonl
from dspylite.utils.stats import paired_diff_ci

logger = logging.getLogger(__name__)

JOB_FILE = "job.json"
RESULTS_FILE = "results.jsonl"
NEEDS_FINISHED_JOB = {
    "eval",
    "optimize",
    "finetune",
}  # their reports show final scores only a finished job has
GENERIC_PLOT_KEYS = 6  # at most this many metric curves in a generic report
OPTIMIZER_DIR = "optimizer"

# The demo's stages, in order, with the report's row titles and the chart's short, distinct labels.
DEMO_STAGES = ["baseline", "prompt", "sft", "grpo", "sft_grpo", "prompt_grpo", "better_together"]
DEMO_STAGE_TITLES = {
    "baseline": "baseline",
    "prompt": "prompt-only (BootstrapFewShotWithRandomSearch)",
    "sft": "weights-only (BootstrapFinetune SFT)",
    "grpo": "weights-only (GRPO from the base model)",
    "sft_grpo": "SFT + GRPO",
    "prompt_grpo": "prompt-optimized -> GRPO (mmGRPO's order)",
    "better_together": "BetterTogether",
}
# The question the demo answers: does a combined pipeline beat each single stage?
SINGLE_STAGES = ("prompt", "sft", "grpo")
COMBINED_STAGES = ("sft_grpo", "prompt_grpo", "better_together")
DEMO_STAGE_LABELS = {
    "baseline": "baseline",
    "prompt": "prompt-only",
    "sft": "SFT",
    "grpo": "GRPO",
    "sft_grpo": "SFT + GRPO",
    "prompt_grpo": "prompt + GRPO",
    "better_together": "BetterTogether",
}


def render_report(run_dir: str | Path) -> Path:
    """(Re)write ``report.md`` and ``report.png`` of ``run_dir``; returns the report's path."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ConfigError(f"run directory not found: {path}")
    run = RunDir(path)
    job = run.load_json(JOB_FILE, {}) or {}
    kind = job.get("kind") or ("better_together" if load_stages(path) else "generic")
    renderer = RENDERERS.get(kind)
    if kind in NEEDS_FINISHED_JOB and job.get("status") != "done":
        logger.warning("%s: the %s job did not finish; writing a report of its metrics only", path, kind)
        renderer = None
    if renderer is None:
        if not run.metrics_path.exists() and not job:
            raise ConfigError(f"{path} is not a run directory: it has neither {JOB_FILE} nor metrics.jsonl")
        renderer = _generic
    renderer(run, job)
    return run.report_md


# ---- shared pieces ---------------------------------------------------------------------------------


def score_rows(scores: dict[str, dict[str, dict[str, Any]]], baseline: str) -> list[dict[str, Any]]:
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
                    "errors": errors_cell(record.get("errors")),
                }
            )
    return rows


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
            "errors": errors_cell(record.get("errors")),
        }
    ]
    sample = [
        {
            "id": r.get("id"),
            "score": r.get("score"),
            "error": r.get("error_kind") or "",
            "labels": str(r.get("labels") or "")[:60],  # results.jsonl also has the inputs
            "prediction": str(r.get("prediction"))[:100],
        }
        for r in read_jsonl(run.path / RESULTS_FILE)[:20]
    ]
    fig, (bars, errors) = new_figure(2, 5.0)
    grouped_bars(
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
    write_report(
        run, f"Evaluation: {job.get('program', 'program')} on {job.get('task', '?')} ({split})", sections, fig
    )


# ---- optimize --------------------------------------------------------------------------------------


def _optimize(run: RunDir, job: dict[str, Any]) -> None:
    scores = job["scores"]
    trials = [r for r in read_jsonl(run.path / OPTIMIZER_DIR / "metrics.jsonl") if r.get("score") is not None]
    fig, axes = new_figure(2 if trials else 1)
    grouped_bars(axes[0], scores, f"{job.get('optimizer')}: baseline vs optimized")
    if trials:
        axes[1].plot(range(1, len(trials) + 1), [r["score"] for r in trials], marker="o")
        axes[1].set_xlabel("optimizer evaluation")
        axes[1].set_ylabel("score % (selection split)")
        axes[1].set_title("scores seen while optimizing")
        axes[1].grid(alpha=0.3)
    sections = [
        ("Scores", markdown_table(score_rows(scores, "baseline"))),
        (
            "Optimizer",
            f"{job.get('optimizer')} on {job.get('n_train')} train examples; demos per predictor: "
            f"{job.get('demos') or {}}. Its trials and report: [{OPTIMIZER_DIR}/report.md]({OPTIMIZER_DIR}/report.md).",
        ),
        ("Setup", _setup(job, ["task", "program", "model", "seconds", "usage"])),
    ]
    write_report(run, f"{job.get('optimizer')} on {job.get('task', '?')}", sections, fig)


# ---- finetune --------------------------------------------------------------------------------------


def _finetune(run: RunDir, job: dict[str, Any]) -> None:
    scores = job["scores"]
    card = job.get("data_card") or {}
    metrics = job.get("train_metrics") or {}
    keys = (
        "global_step",
        "first_loss",
        "last_loss",
        "eval_loss",
        "train_tokens",
        "train_tokens_per_second",
        "train_runtime",
    )
    steps = [(r["step"], r["loss"]) for r in run.metrics() if r.get("phase") == "sft" and "loss" in r]
    fig, axes = new_figure(2)
    grouped_bars(axes[0], scores, "baseline vs BootstrapFinetune")
    if steps:
        axes[1].plot([s for s, _ in steps], [v for _, v in steps], marker="o")
    axes[1].set_xlabel("optimizer step")
    axes[1].set_ylabel("train loss (completion tokens)")
    axes[1].set_title("LoRA SFT")
    axes[1].grid(alpha=0.3)
    sections = [
        ("Scores", markdown_table(score_rows(scores, "baseline"))),
        (
            "Data",
            f"{card.get('runs_passed')}/{card.get('runs_total')} teacher runs passed "
            f"(threshold {card.get('metric_threshold')}); {card.get('rows_train')} train + {card.get('rows_val')} "
            f"val rows; per predictor: {card.get('rows_per_predictor')}. Full card: data/data_card.md.",
        ),
        ("Training", markdown_table([{"metric": k, "value": metrics[k]} for k in keys if k in metrics])),
        (
            "Time (s)",
            markdown_table([{"step": k, "seconds": v} for k, v in (job.get("seconds") or {}).items()]),
        ),
        ("Setup", _setup(job, ["task", "program", "model", "adapter", "lora", "usage"])),
    ]
    write_report(run, f"BootstrapFinetune on {job.get('task', '?')}", sections, fig)


# ---- better together and the demo: stage records ---------------------------------------------------


def _better_together(run: RunDir, job: dict[str, Any]) -> None:
    records = load_stages(run.path)
    scores = job.get("scores") or {}
    render_stage_report(run, records, splits=["val"], title=f"BetterTogether on {job.get('task', '?')}")
    if scores:  # the job's own section: the baseline and the best stage on dev and test
        text = run.report_md.read_text(encoding="utf-8")
        extra = "\n".join(
            [
                "## Baseline vs best stage",
                "",
                markdown_table(score_rows(scores, "baseline")),
                "",
                "## Setup",
                "",
                _setup(
                    job,
                    [
                        "strategy",
                        "weights",
                        "prompt_optimizer",
                        "best_stage",
                        "model",
                        "n_train",
                        "n_val",
                        "seconds",
                    ],
                ),
                "",
            ]
        )
        run.report_md.write_text(text + "\n" + extra, encoding="utf-8")


def _demo(run: RunDir, job: dict[str, Any]) -> None:
    records = sorted(load_stages(run.path), key=lambda r: r.index)
    n_dev = len(records[0].scores.get("dev") or []) if records else 0
    n_test = len(records[0].scores.get("test") or []) if records else 0
    notes = (
        f"Model: `{job.get('model', '?')}`. Dev n={n_dev}, test n={n_test}; brackets are 95% intervals "
        "(Wilson for the scores, paired normal for the difference to the baseline on the same examples). "
        "Failures are the share of examples whose program run failed, by kind (parse: the completion did "
        "not follow the output format). Dev picks (prompt candidates, GRPO versions, BetterTogether "
        f"stages); test never does. Total wall time {float(job.get('seconds') or 0) / 60:.1f} min"
        + (
            " (this invocation's: it resumed an earlier run; the table of wall time by stage covers them all)."
            if job.get("earlier_activity")
            else "."
        )
    )
    more = []
    combined = combined_vs_single_rows(records)
    if combined:
        more.append(
            (
                "Combined vs single stages (test, paired)",
                markdown_table(combined)
                + "\n\nEach combined stage minus each single stage on the same test examples, in points, "
                "with a paired 95% interval. The best single stage is the one dev ranks first (dev picks; "
                "test never does): a combined stage beats it when the whole interval is above zero.",
            )
        )
    if job.get("activity"):
        from dspylite.activity import table_rows

        more.append(
            (
                "Wall time by stage and activity (minutes)",
                markdown_table(table_rows(job["activity"]))
                + "\n\nExclusive time on the main thread (dspylite.activity): program runs = the program on the "
                "server outside evaluations (teacher traces, prompt candidates), evaluation = scoring dev/test/val, "
                "rollouts = GRPO sampling, training = SFT/GRPO updates, adapter sync = save + register + load, "
                "server start = waiting for vLLM, other = everything else (saving, loading, bookkeeping).",
            )
        )
    render_stage_report(
        run,
        records,
        splits=["dev", "test"],
        title="dspylite demo",
        titles=DEMO_STAGE_TITLES,
        labels=DEMO_STAGE_LABELS,
        notes=notes,
        more_sections=more,
    )


def combined_vs_single_rows(records: list[Any]) -> list[dict[str, Any]]:
    """One row per combined stage: its test difference to each single stage, and the verdict against the
    single stage dev ranks first. Empty when the run has no combined or no single stage with test scores."""
    by_name = {r.name: r for r in records if r.scores.get("test")}
    singles = [by_name[n] for n in SINGLE_STAGES if n in by_name]
    combined = [by_name[n] for n in COMBINED_STAGES if n in by_name]
    if not singles or not combined:
        return []
    best = max(singles, key=lambda r: (r.mean("dev") if r.scores.get("dev") else float("-inf"), -r.index))
    rows = []
    for record in combined:
        row: dict[str, Any] = {
            "stage": DEMO_STAGE_LABELS[record.name],
            "test": f"{100 * record.mean('test'):.1f}",
        }
        for single in singles:
            marker = " (best on dev)" if single is best else ""
            row[f"vs {DEMO_STAGE_LABELS[single.name]}{marker}"] = diff_cell(
                single.scores["test"], record.scores["test"]
            )
        if len(best.scores["test"]) == len(record.scores["test"]):
            _, low, high = paired_diff_ci(best.scores["test"], record.scores["test"])
            row["verdict"] = (
                "beats it" if low > 0 else "below it" if high < 0 else "tie (interval includes 0)"
            )
        rows.append(row)
    return rows


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
    fig, (ax,) = new_figure(1, 7.0)
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
        )
    ]
    if job:
        sections.append(
            ("Job", markdown_table([{"": k, "value": str(v)[:200]} for k, v in job.items()], ["", "value"]))
        )
    write_report(run, f"Run {run.path.name}", sections, fig)


RENDERERS: dict[str, Callable[[RunDir, dict[str, Any]], None]] = {
    "eval": _eval,
    "optimize": _optimize,
    "finetune": _finetune,
    "better_together": _better_together,
    "demo": _demo,
}
