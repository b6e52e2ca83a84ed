"""The GRPO loop over a whole program: rollouts -> groups -> update -> sync, with validation and resume.

Each step:
1. rollouts: the program (bound to the current adapter version, cache off) runs K times per example
   at the rollout temperature (``rl.rollouts``);
2. groups: calls are grouped per (example, predictor, call index) and get group-relative advantages
   (``rl.groups``);
3. update: the GRPO loss on the LoRA weights, on the token ids the server sampled (``rl.policy``);
4. sync: the adapter is saved as a new immutable version ``<run>-<session>-<step>`` (temporary
   directory, then rename), registered, loaded into the running vLLM by path under that new name,
   and the program is bound to it; versions no longer needed are unloaded.
The valset is scored at the start, every ``val_every`` steps and at the end; the best version is kept
loaded and returned. After each step a checkpoint (adapter, optimizer moments, RNG, loop state) is
written, so a killed run resumes at the next step without redoing finished ones.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dspylite import settings as _settings
from dspylite.activity import activity
from dspylite.errors import OptimizerError, TrainingError
from dspylite.evaluate import Evaluate
from dspylite.example import Example
from dspylite.reporting import line_plot, markdown_table
from dspylite.run_dir import RunDir
from dspylite.utils.io import atomic_write_json
from dspylite.utils.stats import mean_ci, paired_diff_ci
from rl.config import GRPOConfig, learning_rate_at
from rl.groups import build_groups
from rl.rollouts import collect_rollouts

if TYPE_CHECKING:
    from serving.backend import Backend

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
LATEST_FILE = "latest.json"
ADAPTER_SUBDIR = "adapter"
# Columns of the per-step table in the report (the JSONL rows hold more).
REPORT_COLUMNS = [
    "step",
    "version",
    "reward_mean",
    "reward_std",
    "zero_variance_fraction",
    "parse_failure_rate",
    "loss",
    "kl",
    "rollout_s",
    "train_s",
    "sync_s",
    "val_score",
]


@dataclass
class ValPoint:
    step: int
    version: str
    score: float  # mean metric in [0, 1]
    lo: float
    hi: float
    scores: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class GRPOResult:
    program: Any  # a copy of the input program bound to the best version
    best_version: str  # the served model name (adapter version, or the base model)
    best_adapter_dir: str | None
    start: ValPoint
    best: ValPoint
    final: ValPoint
    history: list[ValPoint]
    run_dir: RunDir
    # Start and best versions scored on a held-out testset (when ``fit`` got one): the valset picked
    # the best version, so only these two measure the gain without that selection's optimism.
    test_start: ValPoint | None = None
    test_best: ValPoint | None = None

    def improvement(self, confidence: float = 0.95) -> tuple[float, float, float]:
        """Paired difference best - start on the valset, with its interval."""
        return paired_diff_ci(self.start.scores, self.best.scores, confidence)

    def test_improvement(self, confidence: float = 0.95) -> tuple[float, float, float] | None:
        """Paired difference best - start on the testset, with its interval; None without a testset."""
        if self.test_start is None or self.test_best is None:
            return None
        return paired_diff_ci(self.test_start.scores, self.test_best.scores, confidence)


def bound_program(program: Any, version: str, lm: Any, predictors: Sequence[str] | None = None) -> Any:
    """A copy of ``program`` whose (selected) predictors send requests to ``version`` through ``lm``."""
    from serving.binding import bind

    copy = program.deepcopy()
    bind(copy, version, lm=lm, predictors=list(predictors) if predictors is not None else None)
    return copy


def rollout_program(program: Any, version: str, lm: Any, predictors: Sequence[str] | None = None) -> Any:
    """Like ``bound_program`` with the cache off everywhere, so K samples of a prompt stay K samples."""
    no_cache = lm.copy(cache=False)
    copy = bound_program(program, version, no_cache, predictors)
    if predictors is not None:
        wanted = set(predictors)
        for name, predictor in copy.named_predictors():
            if name not in wanted:
                own = predictor.lm or _settings.current().lm or lm
                predictor.lm = own.copy(cache=False)
    return copy


class GRPOTrainer:
    """Runs GRPO for one program through ``backend`` (``serving.backend.Backend``): its server samples
    the rollouts and serves each version, its registry records them, its ``model_dir`` is the base
    model trained on, its ``run_dir`` holds checkpoints, adapters and metrics, and its colocation
    wraps every update."""

    def __init__(
        self,
        cfg: GRPOConfig,
        metric: Callable[..., Any],
        backend: Backend,
        *,
        val_metric: Callable[..., Any] | None = None,
        display_progress: bool = False,
        on_step_end: Callable[[int, dict[str, Any]], None] | None = None,
    ):
        if backend.run_dir is None:
            raise OptimizerError("GRPO needs a run directory: Backend(run_dir=...) or backend.with_run_dir()")
        self.cfg = cfg
        self.metric = metric  # the reward of rollouts
        # What validation scores (e.g. exact where the reward is partial).
        self.val_metric = val_metric or metric
        self.backend = backend
        self.server = backend.server
        self.run = backend.run
        self.registry = backend.registry
        self.base_lm = backend.base_lm if backend.base_lm is not None else backend.lm()
        rollout_overrides = {"max_tokens": cfg.max_tokens} if cfg.max_tokens else {}
        self.rollout_lm = self.base_lm.copy(**rollout_overrides) if rollout_overrides else self.base_lm
        self.display_progress = display_progress
        self.on_step_end = on_step_end
        self.policy: Any = None
        self.state: dict[str, Any] = {}
        self._writer: Any = None

    # ---- public -----------------------------------------------------------------------------------------
    def fit(
        self,
        program: Any,
        trainset: Sequence[Example],
        valset: Sequence[Example],
        testset: Sequence[Example] | None = None,
    ) -> GRPOResult:
        """Train; ``valset`` picks the best version, ``testset`` (optional) scores start and best at the end."""
        cfg = self.cfg
        trainset, valset, testset = list(trainset), list(valset), list(testset or [])
        if not trainset:
            raise OptimizerError("GRPO: the trainset is empty")
        if not valset:
            raise OptimizerError("GRPO: the valset is empty (it picks the best adapter version)")
        self._check_predictors(program)
        if not self.run.config_path.exists():  # a job may have written its own, fuller config there
            self.run.write_config(cfg)
        checkpoint = self._latest_checkpoint() if cfg.resume else None
        if checkpoint is not None:
            self._resume(checkpoint)
        else:
            self._start(program, valset, testset)
        bar = self._progress(cfg.num_steps, initial=self.state["step"])
        try:
            while self.state["step"] < cfg.num_steps:
                step = self.state["step"] + 1
                row = self._step(step, program, trainset, valset)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(reward=f"{row['reward_mean']:.3f}", val=row.get("val_score", ""))
                if self.on_step_end is not None:
                    self.on_step_end(step, row)
        finally:
            if bar is not None:
                bar.close()
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        return self._finish(program, testset)

    # ---- start / resume ---------------------------------------------------------------------------------
    def _start(self, program: Any, valset: list[Example], testset: list[Example]) -> None:
        from rl.policy import Policy

        cfg = self.cfg
        init_dir = self._resolve_init_adapter(program)
        self.policy = Policy.load(
            self.backend.model_dir, cfg, adapter_dir=init_dir, serving_dtype=self.backend.serving_dtype
        )
        self.state = {
            "session": os.urandom(3).hex(),
            "step": 0,
            "version": self.server.model_name,
            "versions": [self.server.model_name],  # every version made current, oldest first
            "version_dir": None,
            "loaded": [],  # versions this run loaded into the server (it unloads only these)
            "epoch": 0,
            "cursor": 0,
            "init_adapter": init_dir,
            "val": [],
            "best": None,
            "pending_row": None,
        }
        if init_dir is not None:
            # Serve exactly the weights being trained: the starting adapter becomes version 0.
            self._sync(0)
        start = self._validate(0, program, valset)
        self.state["best"] = {**_val_to_dict(start), "dir": self.state["version_dir"]}
        if testset:
            # Scored now, while the start version is served: the end of the run only loads the best one.
            self.state["test_start"] = _val_to_dict(
                self._score_version(program, start, testset), with_scores=True
            )
        row = {
            "step": 0,
            "version": self.state["version"],
            "val_score": start.score,
            "val_lo": start.lo,
            "val_hi": start.hi,
        }
        self._checkpoint(0, row)
        self._log_row(row)
        logger.info(
            "GRPO start: %s scores %.3f [%.3f, %.3f] on %d val examples",
            self.state["version"],
            start.score,
            start.lo,
            start.hi,
            len(valset),
        )

    def _resume(self, checkpoint: Path) -> None:
        from rl.policy import Policy

        state = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
        logger.info("resuming GRPO from %s (step %d)", checkpoint, state["step"])
        self.policy = Policy.load(
            self.backend.model_dir,
            self.cfg,
            adapter_dir=state.get("init_adapter"),
            serving_dtype=self.backend.serving_dtype,
        )
        self.policy.load_adapter_weights(checkpoint / ADAPTER_SUBDIR)
        self.policy.load_training_state(checkpoint)
        self.state = state
        state.setdefault("versions", [state["version"]])  # a checkpoint from before grpo.max_staleness
        old_session = state["session"]
        # A new session token: a step redone after the kill must not reuse a name the killed process
        # may already have saved, registered or loaded.
        state["session"] = os.urandom(3).hex()
        served = set(self.server.adapters())
        wanted = {state["version"]: state.get("version_dir")}
        best = state.get("best") or {}
        if best.get("version"):
            wanted[best["version"]] = best.get("dir")
        orphan_prefix = f"{self.cfg.run_name}-{old_session}-"
        for name in sorted(served):
            if name.startswith(orphan_prefix) and name not in wanted:
                logger.info("unloading %s, loaded by the killed run after its last checkpoint", name)
                self.server.unload_adapter(name)
                served.discard(name)
        for name, path in wanted.items():
            if path and name not in served:
                # The same immutable version, loaded again into a server that lost it (e.g. restarted).
                self.server.load_adapter(name, path)
                if name not in self.state["loaded"]:
                    self.state["loaded"].append(name)
        self.state["loaded"] = [n for n in self.state["loaded"] if n in served or n in wanted]
        self._forget_versions_after(state["step"], orphan_prefix)
        pending = state.get("pending_row")
        logged = {row.get("step") for row in self.run.metrics()}
        if pending is not None and pending.get("step") not in logged:
            self._log_row(pending)

    def _forget_versions_after(self, step: int, prefix: str) -> None:
        """Unregister and delete the versions a killed run published after its last checkpoint.

        The resumed run redoes those steps under a new session token, so the killed run's versions are
        in no metrics row, no checkpoint and no program: left registered, they would look like history.
        """
        for entry in self.registry.list(prefix):
            if int(entry.metadata.get("step", 0)) <= step:
                continue
            self.registry.unregister(entry.name)
            directory = Path(entry.path)
            if directory.parent.resolve() == self.run.adapters_dir.resolve():
                shutil.rmtree(directory, ignore_errors=True)
            logger.info(
                "dropped %s, published by the killed run after its step-%d checkpoint", entry.name, step
            )

    # ---- one step -----------------------------------------------------------------------------------------
    def _step(
        self, step: int, program: Any, trainset: list[Example], valset: list[Example]
    ) -> dict[str, Any]:
        cfg = self.cfg
        started = time.perf_counter()
        examples = self._next_examples(trainset)
        version = self.state["version"]
        rollout_prog = rollout_program(program, version, self.rollout_lm, cfg.train_predictors)
        with activity("rollouts"):
            batch = self._rollouts(rollout_prog, examples, step, 0)
            rounds, with_signal = 1, batch.examples_with_signal()
            while rounds <= cfg.dynamic_sampling_rounds and with_signal < cfg.examples_per_step:
                batch.extend(self._rollouts(rollout_prog, self._next_examples(trainset), step, rounds))
                rounds, with_signal = rounds + 1, batch.examples_with_signal()
        rollout_s = time.perf_counter() - started

        grouping = build_groups(
            batch.rollouts,
            scale_by_std=cfg.scale_rewards,
            eps=cfg.advantage_eps,
            predictors=cfg.train_predictors,
            format_failure_reward=cfg.format_failure_reward,
        )
        t_train = time.perf_counter()
        if grouping.samples:
            # On a GPU shared with vLLM (server.colocate=sleep) the server sleeps while the policy trains.
            with self.backend.training_phase(f"GRPO step {step}"), activity("training"):
                train_stats = self.policy.update(
                    grouping.samples, temperature=cfg.temperature, learning_rate=learning_rate_at(cfg, step)
                )
            updated = train_stats.get("optimizer_steps", 0) > 0
        else:
            train_stats = {"loss": float("nan"), "kl": float("nan")}
            updated = False
            logger.warning("step %d: no group had reward variance; the adapter is unchanged", step)
        train_s = time.perf_counter() - t_train

        t_sync = time.perf_counter()
        if updated:
            with activity("adapter sync"):
                self._sync(step)
        sync_s = time.perf_counter() - t_sync

        row: dict[str, Any] = {
            "step": step,
            "version": self.state["version"],
            "updated": updated,
            **batch.stats(),
            "sampling_rounds": rounds,
            "examples_with_signal": with_signal,
            **grouping.stats(),
            **train_stats,
            "rollout_s": rollout_s,
            "train_s": train_s,
            "sync_s": sync_s,
        }
        if self._val_due(step):
            t_val = time.perf_counter()
            point = self._validate(step, program, valset)
            row.update(
                val_score=point.score, val_lo=point.lo, val_hi=point.hi, val_s=time.perf_counter() - t_val
            )
            best = self.state["best"]
            if best is None or point.score > best["score"]:
                self.state["best"] = {**_val_to_dict(point), "dir": self.state["version_dir"]}
                logger.info("step %d: new best %s val %.3f", step, point.version, point.score)
        self._unload_stale()
        row["step_s"] = time.perf_counter() - started
        self.state["step"] = step
        if step % cfg.checkpoint_every == 0 or step == cfg.num_steps:
            self._checkpoint(step, row)
        self._log_row(row)
        return row

    def _rollouts(self, program: Any, examples: list[Example], step: int, round_index: int) -> Any:
        """One round of K rollouts per example; rounds of one step number their examples apart."""
        cfg = self.cfg
        return collect_rollouts(
            program,
            examples,
            self.metric,
            num_rollouts=cfg.num_rollouts_per_example,
            temperature=cfg.temperature,
            format_failure_reward=cfg.format_failure_reward,
            num_threads=cfg.rollout_threads,
            rollout_id_base=step * cfg.num_rollouts_per_example,
            index_base=round_index * cfg.examples_per_step,
            # The current version and at most max_staleness before it may have answered a rollout.
            versions=self.state["versions"][-(cfg.max_staleness + 1) :],
            trained=cfg.train_predictors,
        )

    def _val_due(self, step: int) -> bool:
        every = self.cfg.val_every
        return step == self.cfg.num_steps or (every > 0 and step % every == 0)

    def _next_examples(self, trainset: list[Example]) -> list[Example]:
        """The next ``examples_per_step`` examples of a seeded per-epoch permutation (resumable)."""
        chosen: list[Example] = []
        while len(chosen) < min(self.cfg.examples_per_step, len(trainset)):
            order = random.Random(f"{self.cfg.seed}:{self.state['epoch']}").sample(
                range(len(trainset)), len(trainset)
            )
            take = order[
                self.state["cursor"] : self.state["cursor"] + self.cfg.examples_per_step - len(chosen)
            ]
            chosen += [trainset[i] for i in take]
            self.state["cursor"] += len(take)
            if self.state["cursor"] >= len(trainset):
                self.state["epoch"] += 1
                self.state["cursor"] = 0
        return chosen

    # ---- sync -------------------------------------------------------------------------------------------------
    def _sync(self, step: int) -> str:
        """Save the adapter as a new version, register it, load it by path, and make it current."""
        name = f"{self.cfg.run_name}-{self.state['session']}-{step}"
        directory = self.run.adapters_dir / name
        self.policy.save_adapter(directory)
        self.backend.publish(
            name,
            directory,
            base_model=self.policy.model_path,
            metadata={
                "run": self.cfg.run_name,
                "session": self.state["session"],
                "step": step,
                "trainer": "grpo",
            },
        )
        self.state["loaded"].append(name)
        self.state["version"] = name
        self.state["versions"].append(name)
        self.state["version_dir"] = str(directory)
        return name

    def _unload_stale(self, keep_recent: int | None = None) -> None:
        keep_recent = self.cfg.keep_loaded if keep_recent is None else keep_recent
        loaded = self.state["loaded"]
        best = (self.state.get("best") or {}).get("version")
        keep = set(loaded[-keep_recent:] if keep_recent > 0 else []) | {self.state["version"], best}
        for name in [n for n in loaded if n not in keep]:
            try:
                self.server.unload_adapter(name)
            except Exception as exc:  # an adapter the server already lost is not worth stopping the run for
                logger.warning("could not unload stale adapter %s: %s", name, exc)
            loaded.remove(name)

    # ---- validation ---------------------------------------------------------------------------------------------
    def _validate(self, step: int, program: Any, valset: list[Example]) -> ValPoint:
        point = self._score(step, self.state["version"], program, valset)
        self.state["val"].append(_val_to_dict(point, with_scores=False))
        self.state.setdefault("val_scores", {})[str(step)] = point.scores
        return point

    # ---- records ------------------------------------------------------------------------------------------------
    def _log_row(self, row: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        step = clean.pop("step")
        self.run.log_metrics(step, **clean)
        if self.cfg.tensorboard:
            writer = self._tensorboard()
            if writer is not None:
                for key, value in clean.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None:
                        writer.add_scalar(f"grpo/{key}", value, step)
                writer.flush()

    def _tensorboard(self) -> Any:
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: JSONL still has everything
                logger.warning("tensorboard is not installed; metrics go to metrics.jsonl only")
                self.cfg.tensorboard = False
                return None
            # After a resume, events a killed process wrote past the checkpoint are dropped.
            purge = self.state["step"] + 1 if self.state["step"] else None
            self._writer = SummaryWriter(str(self.run.path / "tensorboard"), purge_step=purge)
        return self._writer

    def _checkpoint(self, step: int, row: dict[str, Any]) -> None:
        """adapter + optimizer + RNG + loop state into checkpoints/step-N (temporary dir, then rename)."""
        root = self.run.checkpoints_dir
        root.mkdir(parents=True, exist_ok=True)
        target = root / f"step-{step:05d}"
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=root))
        try:
            self.policy.save_adapter(tmp / ADAPTER_SUBDIR)  # the trained adapter only, not the reference
            self.policy.save_training_state(tmp)
            self.state["pending_row"] = row
            atomic_write_json(tmp / STATE_FILE, self.state)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        atomic_write_json(root / LATEST_FILE, {"step": step, "dir": target.name})
        for old in root.glob("step-*"):
            if old.name != target.name:
                shutil.rmtree(old, ignore_errors=True)

    def _latest_checkpoint(self) -> Path | None:
        pointer = self.run.checkpoints_dir / LATEST_FILE
        if not pointer.exists():
            return None
        try:
            directory = self.run.checkpoints_dir / json.loads(pointer.read_text(encoding="utf-8"))["dir"]
        except (ValueError, KeyError) as exc:
            raise TrainingError(
                f"checkpoint pointer {pointer} is corrupt ({exc}); move it aside to start over"
            ) from exc
        if not (directory / STATE_FILE).exists():
            raise TrainingError(f"checkpoint {directory} named by {pointer} is incomplete")
        return directory

    # ---- end --------------------------------------------------------------------------------------------------------
    def _finish(self, program: Any, testset: list[Example]) -> GRPOResult:
        best = self.state["best"]
        history = [_val_from_dict(v, self.state.get("val_scores", {})) for v in self.state["val"]]
        start = history[0]
        final = history[-1]
        best_point = _val_from_dict(best, self.state.get("val_scores", {}))
        self._unload_stale(keep_recent=0)  # only the best (and current) stay loaded
        if self.state["version"] != best_point.version and self.state["version"] in self.state["loaded"]:
            self.server.unload_adapter(self.state["version"])
            self.state["loaded"].remove(self.state["version"])
        tuned = bound_program(program, best_point.version, self.base_lm, self.cfg.train_predictors)
        tuned.save(self.run.program_path)
        result = GRPOResult(
            program=tuned,
            best_version=best_point.version,
            best_adapter_dir=best.get("dir"),
            start=start,
            best=best_point,
            final=final,
            history=history,
            run_dir=self.run,
        )
        if testset:
            saved = self.state.get("test_start")
            result.test_start = (
                ValPoint(**saved) if saved is not None else self._score_version(program, start, testset)
            )
            result.test_best = (
                result.test_start
                if best_point.version == start.version
                else self._score_version(program, best_point, testset)
            )
        summary = {
            "best_version": result.best_version,
            "best_adapter_dir": result.best_adapter_dir,
            "start": _val_to_dict(start, with_scores=False),
            "best": _val_to_dict(best_point, with_scores=False),
            "final": _val_to_dict(final, with_scores=False),
            "improvement_best_vs_start": list(result.improvement()),
        }
        if result.test_start is not None and result.test_best is not None:
            summary["test_start"] = _val_to_dict(result.test_start, with_scores=False)
            summary["test_best"] = _val_to_dict(result.test_best, with_scores=False)
            summary["test_improvement_best_vs_start"] = list(result.test_improvement() or ())
        self.run.save_json("result.json", summary)
        self._write_report(result)
        return result

    def _score_version(self, program: Any, point: ValPoint, testset: list[Example]) -> ValPoint:
        """Score the version ``point`` names on ``testset``, loading it back into the server if needed."""
        version = point.version
        loaded_here = False
        if version != self.server.model_name and version not in self.server.adapters():
            self.server.load_adapter(version, self.registry.get(version).path)
            loaded_here = True
        try:
            scored = self._score(point.step, version, program, testset)
        finally:
            if loaded_here:
                self.server.unload_adapter(version)
        logger.info(
            "GRPO %s (step %d) on %d test examples: %.3f", version, point.step, len(testset), scored.score
        )
        return scored

    def _score(self, step: int, version: str, program: Any, examples: list[Example]) -> ValPoint:
        """The program bound to ``version``, scored with the val metric on ``examples``."""
        bound = bound_program(program, version, self.base_lm, self.cfg.train_predictors)
        result = Evaluate(
            devset=examples,
            metric=self.val_metric,
            num_threads=self.cfg.val_threads,
            display_progress=self.display_progress,
            # A version that breaks the output format everywhere scores 0 (and its failures are
            # recorded); an unreachable server still stops the run (LMUnavailableError).
            raise_if_all_failed=False,
        )(bound)
        mean, lo, hi = mean_ci(result.scores)
        return ValPoint(step, version, mean, lo, hi, list(result.scores), dict(result.error_counts))

    def _write_report(self, result: GRPOResult) -> None:
        rows = [r for r in self.run.metrics() if r.get("step") is not None]
        by_step: dict[int, dict[str, Any]] = {}
        for r in rows:
            by_step[int(r["step"])] = r  # a redone step after a kill keeps its last row
        ordered = [by_step[s] for s in sorted(by_step)]
        diff, dlo, dhi = result.improvement()
        summary = _points_table(
            [("start", result.start), ("best", result.best), ("final", result.final)], "val"
        )
        summary += (
            f"\n\nBest - start (paired over {len(result.start.scores)} val examples): "
            f"{diff:+.3f}, 95% CI [{dlo:+.3f}, {dhi:+.3f}]."
        )
        test_diff = result.test_improvement()
        if test_diff is not None and result.test_start is not None and result.test_best is not None:
            summary += "\n\n" + _points_table(
                [("start", result.test_start), ("best", result.test_best)], "test"
            )
            summary += (
                f"\n\nOn the held-out test set (never used to pick a version), best - start (paired over "
                f"{len(result.test_start.scores)} examples): {test_diff[0]:+.3f}, "
                f"95% CI [{test_diff[1]:+.3f}, {test_diff[2]:+.3f}]."
            )
        steps = [r for r in ordered if r["step"] > 0]
        timing = ""
        if steps:

            def avg(key: str) -> float:
                values = [r[key] for r in steps if isinstance(r.get(key), (int, float))]
                return sum(values) / len(values) if values else float("nan")

            timing = markdown_table(
                [
                    {
                        "rollout_s": avg("rollout_s"),
                        "train_s": avg("train_s"),
                        "sync_s": avg("sync_s"),
                        "step_s": avg("step_s"),
                    }
                ]
            )
        table_rows = [
            {c: r.get(c, "") if r.get(c) is not None else "" for c in REPORT_COLUMNS} for r in ordered
        ]
        reward_xs = [r["step"] for r in steps if isinstance(r.get("reward_mean"), (int, float))]
        reward_ys = [r["reward_mean"] for r in steps if isinstance(r.get("reward_mean"), (int, float))]
        val_xs = [p.step for p in result.history]
        val_ys = [p.score for p in result.history]
        figure = line_plot(
            {"rollout reward (mean)": (reward_xs, reward_ys), "val score": (val_xs, val_ys)},
            title="GRPO",
            xlabel="step",
            ylabel="reward / score",
        )
        self.run.write_report(
            "GRPO",
            [
                ("Validation", summary),
                ("Mean seconds per step", timing or "(no steps)"),
                ("Per step", markdown_table(table_rows, REPORT_COLUMNS)),
            ],
            figure=figure,
        )
        import matplotlib.pyplot as plt

        plt.close(figure)

    # ---- helpers ----------------------------------------------------------------------------------------------------
    def _check_predictors(self, program: Any) -> None:
        names = [n for n, _ in program.named_predictors()]
        if not names:
            raise OptimizerError(f"GRPO: {type(program).__name__} has no predictors to train")
        if self.cfg.train_predictors is not None:
            unknown = [n for n in self.cfg.train_predictors if n not in names]
            if unknown:
                raise OptimizerError(
                    f"train_predictors {unknown} are not predictors of the program; it has {names}"
                )

    def _resolve_init_adapter(self, program: Any) -> str | None:
        init = self.cfg.init_adapter
        if init == "base":
            return None
        if init:
            return str(Path(init).expanduser().resolve())
        from serving.binding import bindings

        wanted = self.cfg.train_predictors
        models = {m for n, m in bindings(program).items() if wanted is None or n in wanted}
        loaded = self.server.loaded_adapters
        if len(models) == 1:
            model = next(iter(models))
            if model in loaded:
                logger.info("GRPO starts from adapter %s (%s), the program's binding", model, loaded[model])
                return str(loaded[model])
        return None

    def _progress(self, total: int, initial: int) -> Any:
        if not self.display_progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc="GRPO", dynamic_ncols=True)


def _points_table(points: list[tuple[str, ValPoint]], split: str) -> str:
    """A report table of labelled scores on one split (val or test), with their intervals."""
    return markdown_table(
        [
            {
                "": label,
                "version": point.version,
                "step": point.step,
                f"{split} mean": point.score,
                "95% CI": f"[{point.lo:.3f}, {point.hi:.3f}]",
            }
            for label, point in points
        ]
    )


def _val_to_dict(point: ValPoint, *, with_scores: bool = False) -> dict[str, Any]:
    data = {
        "step": point.step,
        "version": point.version,
        "score": point.score,
        "lo": point.lo,
        "hi": point.hi,
        "errors": point.errors,
    }
    if with_scores:
        data["scores"] = point.scores
    return data


def _val_from_dict(data: dict[str, Any], scores: dict[str, list[float]]) -> ValPoint:
    return ValPoint(
        data["step"],
        data["version"],
        data["score"],
        data["lo"],
        data["hi"],
        list(scores.get(str(data["step"]), [])),
        dict(data.get("errors", {})),
    )
