"""The main job: one program improved by prompts, by weights, and by both, on one vLLM server.

    dspylite demo                      # the tiny local model, CPU is fine
    dspylite demo model=/path/to/ckpt  # a real checkpoint on a GPU workstation

Stages, each scored on the dev and test splits (with 95% intervals):
baseline -> prompt-only (BootstrapFewShot) -> weights-only (BootstrapFinetune, LoRA SFT)
-> SFT+GRPO (GRPO starting from the SFT adapter) -> BetterTogether (prompt, then weights).
Each finished stage is saved in the run directory; a rerun with the same run_dir resumes after it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspylite.cache import CACHE_DIR_ENV
from dspylite.config_io import load_config
from dspylite.run_dir import RunDir, markdown_table
from dspylite.utils.stats import mean_ci, paired_diff_ci

logger = logging.getLogger(__name__)

ALL_STAGES = ["baseline", "prompt", "sft", "grpo", "sft_grpo", "better_together"]
STAGE_TITLES = {
    "baseline": "baseline",
    "prompt": "prompt-only (BootstrapFewShotWithRandomSearch)",
    "sft": "weights-only (BootstrapFinetune SFT)",
    "grpo": "weights-only (GRPO from the base model)",
    "sft_grpo": "SFT + GRPO",
    "better_together": "BetterTogether (p -> w)",
}
# The chart's tick labels: short, and distinct (two stages are weights-only).
STAGE_LABELS = {
    "baseline": "baseline",
    "prompt": "prompt-only",
    "sft": "SFT",
    "grpo": "GRPO",
    "sft_grpo": "SFT + GRPO",
    "better_together": "BetterTogether",
}


@dataclass
class DemoConfig:
    model: str | None = field(
        default=None,
        metadata={
            "help": "Base model directory (a HF checkpoint). Empty: build/load the built-in tiny model."
        },
    )
    run_dir: str = field(default="runs/demo", metadata={"help": "Run directory; rerunning resumes it."})
    seed: int = field(default=0, metadata={"help": "Seed for data, optimizers and training."})
    n_train: int = field(
        default=2000, metadata={"help": "Training examples (fact QA): the teacher runs on each."}
    )
    n_dev: int = field(default=400, metadata={"help": "Dev examples (held out; picks and reports)."})
    n_test: int = field(default=400, metadata={"help": "Test examples (held out; reported only)."})
    num_threads: int = field(default=16, metadata={"help": "Concurrent requests to vLLM."})
    stages: list[str] = field(
        default_factory=lambda: list(ALL_STAGES),
        metadata={"help": f"Which stages to run, from {ALL_STAGES}."},
    )
    max_bootstrapped_demos: int = field(default=2, metadata={"help": "Prompt stage: bootstrapped demos."})
    num_candidate_programs: int = field(
        default=3,
        metadata={"help": "Prompt stage: random-search candidates besides zero-shot and labeled-only."},
    )
    prompt_valset_size: int = field(
        default=150, metadata={"help": "Dev examples the prompt search and BetterTogether select on."}
    )
    max_labeled_demos: int = field(default=0, metadata={"help": "Prompt stage: labeled demos."})
    sft_config: str = field(default="configs/sft.yaml", metadata={"help": "LoRA SFT config (YAML)."})
    sft_overrides: list[str] = field(
        default_factory=list, metadata={"help": "key=value overrides for sft_config."}
    )
    sft_samples_per_example: int = field(
        default=1,
        metadata={
            "help": "Teacher runs per training example when collecting SFT traces: the first greedy, the "
            "rest sampled at sft_sample_temperature."
        },
    )
    sft_sample_temperature: float = field(
        default=0.3,
        metadata={"help": "Temperature of the teacher samples after the first (greedy) one."},
    )
    grpo_config: str = field(default="configs/grpo.yaml", metadata={"help": "GRPO config (YAML)."})
    grpo_overrides: list[str] = field(
        # The measured SFT+GRPO recipe: short, and hotter than grpo_config's from-base default.
        default_factory=lambda: ["num_steps=10", "val_every=5", "temperature=0.7", "learning_rate=5.0e-4"],
        metadata={"help": "SFT + GRPO stage: key=value overrides for grpo_config's grpo: section."},
    )
    grpo_base_overrides: list[str] = field(
        default_factory=list,
        metadata={
            "help": "GRPO-from-base stage: key=value overrides for grpo_config's grpo: section "
            "(none: its from-base defaults, 60 steps)."
        },
    )
    grpo_valset_size: int = field(default=150, metadata={"help": "Dev examples GRPO validates on."})
    strategy: str = field(default="p -> w", metadata={"help": "BetterTogether strategy over p and w."})
    max_lora_rank: int = field(default=16, metadata={"help": "vLLM --max-lora-rank."})
    api_base: str | None = field(
        default=None,
        metadata={
            "help": "Use an already-running vLLM at this URL instead of starting one (model must match)."
        },
    )


@dataclass
class StageScores:
    name: str
    dev: list[float]
    test: list[float]
    seconds: float
    adapter: str | None = None

    def row(self, baseline: StageScores | None) -> dict[str, Any]:
        dev_mean, dev_lo, dev_hi = mean_ci(self.dev)
        test_mean, test_lo, test_hi = mean_ci(self.test)
        row = {
            "stage": STAGE_TITLES.get(self.name, self.name),
            "dev": f"{100 * dev_mean:.1f} [{100 * dev_lo:.1f}, {100 * dev_hi:.1f}]",
            "test": f"{100 * test_mean:.1f} [{100 * test_lo:.1f}, {100 * test_hi:.1f}]",
        }
        for split in ("dev", "test"):
            if baseline is not None and baseline is not self:
                d, lo, hi = paired_diff_ci(getattr(baseline, split), getattr(self, split))
                row[f"{split} vs baseline"] = f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
            else:
                row[f"{split} vs baseline"] = "-"
        row["adapter"] = self.adapter or "-"
        row["seconds"] = f"{self.seconds:.0f}"
        return row


def run_demo(
    config: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Run the whole demo; returns the run directory. ``progress`` receives one line per stage."""
    cfg = load_config(DemoConfig, config, list(overrides))
    unknown = [s for s in cfg.stages if s not in ALL_STAGES]
    if unknown:
        from dspylite.errors import ConfigError

        raise ConfigError(f"stages: unknown stage(s) {unknown}; choose from {ALL_STAGES}")
    say = progress or (lambda msg: logger.info("%s", msg))
    run = RunDir(cfg.run_dir)
    run.write_config(cfg)
    # A cache of the run's own: a resumed demo replays its finished calls, and no other run's entries
    # (the default cache is shared by every program on the machine) can change its numbers. Every LM
    # the stages create reads the variable, so it is set for the run and restored afterwards.
    previous = os.environ.get(CACHE_DIR_ENV)
    os.environ[CACHE_DIR_ENV] = str(run.path.resolve() / "lm-cache")
    try:
        return _Demo(cfg, run, say).run()
    finally:
        if previous is None:
            os.environ.pop(CACHE_DIR_ENV, None)
        else:
            os.environ[CACHE_DIR_ENV] = previous


class _Demo:
    def __init__(self, cfg: DemoConfig, run: RunDir, say: Callable[[str], None]):
        self.cfg = cfg
        self.run_dir = run
        self.say = say
        # Optimizer results keyed by (step kind, input program state): BetterTogether's steps reuse
        # the single-stage results when their input program is the same one.
        self._memo: dict[tuple[str, str], Any] = {}
        self.scores: dict[str, StageScores] = {
            name: StageScores(**row) for name, row in (run.load_json("stages.json", {}) or {}).items()
        }

    def run(self) -> Path:
        import dspylite
        from dspylite.datasets import fact_qa_metric, load_fact_qa
        from dspylite.datasets.programs import FactQA

        cfg = self.cfg
        started = time.time()
        model = self._model_path()
        data = load_fact_qa(seed=cfg.seed, n_train=cfg.n_train, n_dev=cfg.n_dev, n_test=cfg.n_test)
        self.metric = fact_qa_metric
        self.data = data
        with self._server(model) as server:
            self.server = server
            self.model = model
            self.registry = self._registry()
            dspylite.configure(lm=server.lm())
            baseline = FactQA()
            programs: dict[str, Any] = {}
            for name in [s for s in ALL_STAGES if s in cfg.stages]:
                programs[name] = self._stage(name, baseline, programs)
        self._report(time.time() - started)
        return self.run_dir.path

    # ---- infrastructure -------------------------------------------------------------------------
    def _model_path(self) -> str:
        if self.cfg.model:
            path = Path(self.cfg.model).expanduser()
            if not path.exists():
                from dspylite.errors import ConfigError

                raise ConfigError(f"model: directory {path} does not exist")
            return str(path.resolve())
        from finetune.tiny_model import build_tiny_model

        self.say("building or loading the tiny local model ...")
        return str(build_tiny_model())

    def _server(self, model: str):
        from serving import VLLMServer

        if self.cfg.api_base:
            from serving import connect

            return _NullContext(connect(self.cfg.api_base))
        self.say("starting vLLM (LoRA enabled) ...")
        return VLLMServer(model, log_dir=self.run_dir.path, max_lora_rank=self.cfg.max_lora_rank)

    def _registry(self):
        from serving.registry import AdapterRegistry

        return AdapterRegistry(self.run_dir.adapters_dir)

    def _evaluate(self, program: Any, split: str) -> list[float]:
        from dspylite.evaluate import Evaluate

        result = Evaluate(
            devset=self.data[split],
            metric=self.metric,
            num_threads=self.cfg.num_threads,
            display_progress=True,
        )(program)
        if result.error_counts:
            logger.warning("%s: failures on %s: %s", split, self.run_dir.path, result.error_counts)
        self.run_dir.log_metrics(split=split, score=result.score, errors=result.error_counts)
        return result.scores

    # ---- stages -------------------------------------------------------------------------------------
    def _stage(self, name: str, baseline: Any, programs: dict[str, Any]) -> Any:
        stage_dir = self.run_dir.path / "stages" / name
        program_file = stage_dir / "program.json"
        if name in self.scores and program_file.exists():
            self.say(f"[{name}] already finished; loading {program_file}")
            program = baseline.deepcopy()
            program.load(program_file)
            self._reload_adapters(program)
            return program
        self.say(f"[{name}] {STAGE_TITLES[name]} ...")
        start = time.time()
        program = getattr(self, f"_compile_{name}")(baseline, programs, stage_dir)
        dev = self._evaluate(program, "dev")
        test = self._evaluate(program, "test")
        program.save(program_file)
        adapters = sorted({p.lm.model for _, p in program.named_predictors() if p.lm is not None})
        scores = StageScores(name, dev, test, time.time() - start, ", ".join(adapters) or None)
        self.scores[name] = scores
        self.run_dir.save_json("stages.json", {k: v.__dict__ for k, v in self.scores.items()})
        self.run_dir.log_metrics(
            stage=name, dev=100 * mean_ci(dev)[0], test=100 * mean_ci(test)[0], seconds=scores.seconds
        )
        self.say(
            f"[{name}] dev {100 * mean_ci(dev)[0]:.1f}  test {100 * mean_ci(test)[0]:.1f}  "
            f"({scores.seconds:.0f}s)"
        )
        return program

    def _reload_adapters(self, program: Any) -> None:
        """After a restart the new server has no adapters: load the ones the program is bound to."""
        from dspylite.jobs.common import ensure_adapters_served

        ensure_adapters_served(program, self.server, search_root=self.run_dir.path)

    def _compile_baseline(self, baseline: Any, programs: dict[str, Any], stage_dir: Path) -> Any:
        return baseline.deepcopy()

    def _prompt_optimizer(self, stage_dir: Path):
        from dspylite.optimizers import BootstrapFewShotWithRandomSearch

        return BootstrapFewShotWithRandomSearch(
            metric=self.metric,
            max_bootstrapped_demos=self.cfg.max_bootstrapped_demos,
            max_labeled_demos=self.cfg.max_labeled_demos,
            num_candidate_programs=self.cfg.num_candidate_programs,
            num_threads=self.cfg.num_threads,
            seed=self.cfg.seed,
            run_dir=stage_dir / "search",
        )

    def _weight_optimizer(self, stage_dir: Path, run_name: str):
        from dspylite.optimizers import BootstrapFinetune

        return BootstrapFinetune(
            self.metric,
            server=self.server,
            model_path=self.model,
            config=_load_sft_config(self.cfg),
            num_threads=self.cfg.num_threads,
            run_dir=stage_dir / "finetune",
            registry=self.registry,
            run_name=run_name,
            samples_per_example=self.cfg.sft_samples_per_example,
            sample_temperature=self.cfg.sft_sample_temperature,
        )

    def _compile_prompt(self, baseline: Any, programs: dict[str, Any], stage_dir: Path) -> Any:
        optimizer = _Memo(self._prompt_optimizer(stage_dir), "p", self._memo)
        return optimizer.compile(
            baseline.deepcopy(), trainset=self.data["train"], valset=self._selection_set()
        )

    def _compile_sft(self, baseline: Any, programs: dict[str, Any], stage_dir: Path) -> Any:
        optimizer = _Memo(self._weight_optimizer(stage_dir, "sft"), "w", self._memo)
        return optimizer.compile(baseline.deepcopy(), trainset=self.data["train"])

    def _selection_set(self) -> list[Any]:
        return self.data["dev"][: self.cfg.prompt_valset_size]

    def _compile_grpo(self, baseline: Any, programs: dict[str, Any], stage_dir: Path) -> Any:
        config = _load_grpo_config(self.cfg, self.cfg.grpo_base_overrides)
        return self._run_grpo(baseline, config, stage_dir, init_adapter="base")

    def _compile_sft_grpo(self, baseline: Any, programs: dict[str, Any], stage_dir: Path) -> Any:
        from dspylite.jobs.common import find_adapter

        start = programs.get("sft")
        if start is None:
            start = self._compile_sft(baseline, programs, self.run_dir.path / "stages" / "sft")
        adapter = next((p.lm.model for _, p in start.named_predictors() if p.lm is not None), None)
        init_adapter = find_adapter(adapter, self.run_dir.path) if adapter else None
        config = _load_grpo_config(self.cfg, self.cfg.grpo_overrides)
        return self._run_grpo(start, config, stage_dir, init_adapter=init_adapter or "base")

    def _run_grpo(self, start: Any, config: Any, stage_dir: Path, *, init_adapter: Any) -> Any:
        from dspylite.optimizers import GRPO

        grpo = GRPO(
            self.metric,
            server=self.server,
            model_path=self.model,
            config=config,
            run_dir=stage_dir / "grpo",
            init_adapter=init_adapter,
        )
        return grpo.compile(
            start.deepcopy(),
            trainset=self.data["train"],
            valset=self.data["dev"][: self.cfg.grpo_valset_size],
        )

    def _compile_better_together(self, baseline: Any, programs: dict[str, Any], stage_dir: Path) -> Any:
        from dspylite.optimizers import BetterTogether

        bt = BetterTogether(
            self.metric,
            prompt_optimizer=_Memo(self._prompt_optimizer(stage_dir / "p"), "p", self._memo),
            weight_optimizer=_Memo(self._weight_optimizer(stage_dir, "bt"), "w", self._memo),
            num_threads=self.cfg.num_threads,
            seed=self.cfg.seed,
            run_dir=stage_dir / "bt",
        )
        return bt.compile(
            baseline.deepcopy(),
            trainset=self.data["train"],
            valset=self._selection_set(),
            strategy=self.cfg.strategy,
        )

    # ---- report -------------------------------------------------------------------------------------
    def _report(self, seconds: float) -> None:
        self.run_dir.save_json(
            "demo.json",
            {
                "model": self.model,
                "seconds": round(seconds, 1),
                "n_dev": len(self.data["dev"]),
                "n_test": len(self.data["test"]),
            },
        )
        render_report(self.run_dir)


def render_report(run: RunDir) -> Path:
    """Write report.md (the scores table) and report.png (a bar chart) from the run's saved files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = {name: StageScores(**row) for name, row in (run.load_json("stages.json", {}) or {}).items()}
    info = run.load_json("demo.json", {}) or {}
    baseline = scores.get("baseline")
    names = [s for s in ALL_STAGES if s in scores]
    rows = [scores[n].row(baseline) for n in names]
    fig, ax = plt.subplots(figsize=(8, 4))
    xs = list(range(len(names)))
    for offset, split in ((-0.2, "dev"), (0.2, "test")):
        means, errs = [], [[], []]
        for n in names:
            m, lo, hi = mean_ci(getattr(scores[n], split))
            means.append(100 * m)
            errs[0].append(100 * (m - lo))
            errs[1].append(100 * (hi - m))
        ax.bar([x + offset for x in xs], means, width=0.4, yerr=errs, capsize=3, label=split)
    ax.set_xticks(xs)
    ax.set_xticklabels([STAGE_LABELS[n] for n in names], rotation=15)
    ax.set_ylabel("exact match (%)")
    n_dev = len(scores[names[0]].dev) if names else 0
    n_test = len(scores[names[0]].test) if names else 0
    ax.set_title(f"dspylite demo: fact QA, {n_dev} dev / {n_test} test examples")
    ax.legend()
    notes = (
        f"Model: `{info.get('model', '?')}`. Dev n={n_dev}, test n={n_test}; brackets are 95% intervals "
        "(Wilson for the scores, paired normal for the difference to the baseline on the same "
        "examples). Dev picks (prompt candidates, GRPO versions, BetterTogether stages); test never does. "
        f"Total wall time {info.get('seconds', 0) / 60:.1f} min."
    )
    path = run.write_report("dspylite demo", [("Scores", markdown_table(rows)), ("Notes", notes)], figure=fig)
    plt.close(fig)
    return path


def _load_sft_config(cfg: DemoConfig) -> Any:
    from finetune.config import load_finetune_config

    return load_finetune_config(cfg.sft_config, cfg.sft_overrides)


def _load_grpo_config(cfg: DemoConfig, overrides: list[str]) -> Any:
    """The ``grpo:`` section of ``cfg.grpo_config``, with ``key=value`` overrides relative to it."""
    from dspylite.config_io import from_dict, read_yaml_mapping, set_dotted, split_override
    from rl.config import GRPOConfig

    path = Path(cfg.grpo_config)
    if not path.exists():
        from dspylite.errors import ConfigError

        raise ConfigError(f"grpo_config: file not found: {path}")
    data = read_yaml_mapping(path).get("grpo") or {}
    for key, value in (split_override(o) for o in overrides):
        set_dotted(data, key, value)
    return from_dict(GRPOConfig, data, source=f"{path} (grpo section)")


class _Memo:
    """Wraps an optimizer so that compiling the same program state twice in one demo trains once."""

    def __init__(self, optimizer: Any, kind: str, memo: dict[tuple[str, str], Any]):
        self.optimizer = optimizer
        self.kind = kind
        self.memo = memo
        self.server = getattr(optimizer, "server", None)
        self._registry = getattr(optimizer, "_registry", None)

    def compile(self, program: Any, **kwargs: Any) -> Any:
        import json

        key = (self.kind, json.dumps(program.dump_state(), sort_keys=True, default=str))
        if key in self.memo:
            logger.info("reusing the %s-step result for an identical input program", self.kind)
            return self.memo[key].deepcopy()
        result = self.optimizer.compile(program, **kwargs)
        self.memo[key] = result.deepcopy()
        return result


class _NullContext:
    def __init__(self, value: Any):
        self.value = value

    def __enter__(self) -> Any:
        return self.value

    def __exit__(self, *exc: Any) -> None:
        return None
