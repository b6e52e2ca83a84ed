"""Every report's pieces, rendered one way: score cells, paired differences, tables and plots.

    score_cell([1, 0, 1, 1])                 # '75.0 [30.1, 95.4]'  (Wilson 95% interval)
    diff_cell(baseline_scores, tuned_scores) # '+5.5 [+1.9, +9.1]'  (paired, same examples)
    render_stage_report(run, records, splits=["dev", "test"], title="dspylite demo")

Jobs, optimizers and trainers all call these, so a number looks the same in every report. Plots use
matplotlib's Agg backend (no display needed), imported only when a figure is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dspylite.utils.stats import mean_ci, paired_diff_ci

SPLIT_ORDER = ["train", "val", "dev", "test", "all"]


def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def score_summary(scores: Sequence[float]) -> dict[str, Any]:
    """``{mean, ci95: [lo, hi], n}`` of per-example scores in [0, 1]."""
    mean, low, high = mean_ci(list(scores))
    return {"mean": mean, "ci95": [low, high], "n": len(scores)}


def score_cell(record: dict[str, Any] | Sequence[float]) -> str:
    """``61.0 [55.2, 66.4]``: the mean in percent with its 95% interval (a summary or raw scores)."""
    if not isinstance(record, dict):
        record = score_summary(record)
    low, high = record["ci95"]
    return f"{pct(record['mean'])} [{pct(low)}, {pct(high)}]"


def diff_cell(before: dict[str, Any] | Sequence[float], after: dict[str, Any] | Sequence[float]) -> str:
    """The paired difference after - before in points, with its 95% interval; '-' when not paired."""
    a = before.get("scores") if isinstance(before, dict) else before
    b = after.get("scores") if isinstance(after, dict) else after
    a, b = list(a or []), list(b or [])
    if not a or len(a) != len(b):
        return "-"
    diff, low, high = paired_diff_ci(a, b)
    return f"{100 * diff:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def errors_cell(errors: dict[str, int] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (errors or {}).items()) or "none"


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|")


def new_figure(ncols: int = 1, width: float = 6.0, height: float = 4.0) -> tuple[Any, list[Any]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height))
    return fig, list(axes) if ncols > 1 else [axes]


def line_plot(series: dict[str, tuple[list[float], list[float]]], *, title: str, xlabel: str, ylabel: str):
    """A matplotlib Figure with one line per series."""
    fig, (ax,) = new_figure(1, width=7.0)
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    return fig


def grouped_bars(
    ax: Any, scores: dict[str, dict[str, Any]], title: str, labels: dict[str, str] | None = None
) -> None:
    """Bars of score % with 95% intervals: one group per program, one bar per split.

    ``scores``: program -> split -> a summary (``score_summary``) or the raw per-example scores.
    """
    programs = list(scores)
    splits = sorted({s for v in scores.values() for s in v}, key=_split_key)
    width = 0.8 / max(1, len(splits))
    for j, split in enumerate(splits):
        xs, means, low, high = [], [], [], []
        for i, program in enumerate(programs):
            record = scores[program].get(split)
            if record is None:
                continue
            if not isinstance(record, dict):
                record = score_summary(record)
            m = 100 * record["mean"]
            xs.append(i + (j - (len(splits) - 1) / 2) * width)
            means.append(m)
            # max(0, ...): a Wilson bound can sit a rounding error past the mean at 0% or 100%.
            low.append(max(0.0, m - 100 * record["ci95"][0]))
            high.append(max(0.0, 100 * record["ci95"][1] - m))
        ax.bar(xs, means, width=width, yerr=[low, high], capsize=4, label=split)
    ax.set_xticks(range(len(programs)))
    ax.set_xticklabels([(labels or {}).get(p, p) for p in programs], rotation=15 if len(programs) > 3 else 0)
    ax.set_ylim(0, 100)
    ax.set_ylabel("score % (95% CI)")
    ax.set_title(title)
    if len(splits) > 1:
        ax.legend()


def _split_key(split: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def write_report(run: Any, title: str, sections: list[tuple[str, str]], fig: Any = None) -> Any:
    """report.md (sections) and report.png (``fig``) in the run directory."""
    if fig is not None:
        import matplotlib.pyplot as plt

        fig.tight_layout()
    path = run.write_report(title, sections, figure=fig)
    if fig is not None:
        plt.close(fig)
    return path


def stage_rows(
    records: Sequence[Any],
    splits: Sequence[str],
    *,
    baseline: str = "baseline",
    titles: dict[str, str] | None = None,
    extra: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per stage record: score per split, paired difference to the baseline stage, time."""
    base = next((r for r in records if r.name == baseline), None)
    rows = []
    for record in records:
        row: dict[str, Any] = {"stage": (titles or {}).get(record.name, record.name)}
        for split in splits:
            values = record.scores.get(split)
            row[split] = score_cell(values) if values else "-"
        for split in splits:
            paired = base is not None and record is not base and base.scores.get(split)
            row[f"{split} vs {baseline}"] = (
                diff_cell(base.scores[split], record.scores.get(split) or []) if paired else "-"
            )
        if any(getattr(r, "errors", None) for r in records):
            for split in splits:
                n = len(record.scores.get(split) or [])
                failed = (record.errors or {}).get(split) or {}
                row[f"{split} failures"] = (
                    ", ".join(f"{k} {100 * v / n:.1f}%" for k, v in sorted(failed.items()))
                    if n and failed
                    else "none"
                )
        row.update((extra or {}).get(record.name, {}))
        row["adapter"] = ", ".join(sorted(record.adapters)) or "-"
        row["seconds"] = f"{record.seconds:.0f}"
        rows.append(row)
    return rows


def render_stage_report(
    run: Any,
    records: Sequence[Any],
    *,
    splits: Sequence[str],
    title: str,
    titles: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    extra: dict[str, dict[str, Any]] | None = None,
    notes: str = "",
    more_sections: Sequence[tuple[str, str]] = (),
) -> Any:
    """The report of a multi-stage run (BetterTogether, the demo) from its stage records."""
    rows = stage_rows(records, splits, titles=titles, extra=extra)
    fig, (ax,) = new_figure(1, width=8.0)
    sizes = ", ".join(f"{len(records[0].scores.get(s) or [])} {s}" for s in splits) if records else ""
    grouped_bars(
        ax,
        {r.name: {s: r.scores[s] for s in splits if r.scores.get(s)} for r in records},
        f"{title}: {sizes} examples",
        labels,
    )
    sections = [("Scores", markdown_table(rows))]
    if notes:
        sections.append(("Notes", notes))
    sections += list(more_sections)
    return write_report(run, title, sections, fig)
