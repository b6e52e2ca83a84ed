"""Rollouts: K runs of the whole program per example, sampled concurrently from the served policy.

Each rollout runs under its own ``rollout_id`` at temperature > 0 with the LM cache off (a cached
answer would make K samples one sample), and records every predictor call as a TraceRecord. Its
reward is the program's metric on the final prediction. How failures count (DESIGN.md, invariant 7):

- a parse failure (the model broke the output format) is a legitimate outcome of the policy: the
  rollout gets ``format_failure_reward`` and its traces, including the failed call, are trained on;
- an LM/server error, an exception in the program's own code, or a metric that raised say nothing
  about the policy: the rollout is excluded from training and counted under its error kind;
- a rollout whose trained calls were answered by another model than the allowed adapter versions
  (``versions``: the current one and at most ``max_staleness`` before it; with several servers a
  lagging one could answer) is excluded as ``stale``: its tokens came from other weights.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dspylite import settings as _settings
from dspylite.errors import LMUnavailableError, MetricError
from dspylite.evaluate import example_id, run_one
from dspylite.example import Example
from dspylite.trace import TraceRecord
from dspylite.utils.parallel import parallel_map
from rl.groups import is_zero_variance

logger = logging.getLogger(__name__)

# Error kinds from dspylite.evaluate.run_one that reflect the sampled text, hence get a reward.
POLICY_FAILURES = frozenset({"parse"})


@dataclass
class Rollout:
    example_index: int
    example_key: str  # which group family this rollout belongs to (example id + position)
    rollout_id: int
    reward: float
    score: float | None  # the metric's value; None when the run failed before scoring
    error_kind: str | None = None  # "parse", "lm", "program", "metric" (dspylite.evaluate.run_one)
    error: str | None = None
    traces: list[TraceRecord] = field(default_factory=list)
    prediction: Any = None


@dataclass
class RolloutBatch:
    rollouts: list[Rollout]  # the ones to learn from (successes and parse failures)
    excluded: list[Rollout]  # LM, program and metric errors: not trained on
    seconds: float = 0.0

    @property
    def all(self) -> list[Rollout]:
        return self.rollouts + self.excluded

    def extend(self, other: RolloutBatch) -> None:
        """Add another round of rollouts (their example keys must not collide: see ``index_base``)."""
        self.rollouts.extend(other.rollouts)
        self.excluded.extend(other.excluded)
        self.seconds += other.seconds

    def examples_with_signal(self) -> int:
        """Examples whose kept rollouts differ in reward (by build_groups' rule): they carry a gradient."""
        rewards: dict[str, list[float]] = {}
        for r in self.rollouts:
            rewards.setdefault(r.example_key, []).append(r.reward)
        return sum(1 for values in rewards.values() if len(values) > 1 and not is_zero_variance(values))

    def stats(self) -> dict[str, float]:
        rewards = [r.reward for r in self.rollouts]
        total = len(self.rollouts) + len(self.excluded)
        parse_failures = sum(1 for r in self.rollouts if r.error_kind == "parse")
        calls = [t for r in self.rollouts for t in r.traces]
        completion_tokens = [len(t.completion_token_ids or ()) for t in calls]
        mean = sum(rewards) / len(rewards) if rewards else float("nan")
        std = math.sqrt(sum((x - mean) ** 2 for x in rewards) / len(rewards)) if rewards else float("nan")
        counts: dict[str, float] = {}
        for r in self.excluded:
            counts[f"errors_{r.error_kind}"] = counts.get(f"errors_{r.error_kind}", 0.0) + 1.0
        return {
            "reward_mean": mean,
            "reward_std": std,
            "rollouts": float(total),
            "parse_failures": float(parse_failures),
            "parse_failure_rate": parse_failures / total if total else 0.0,
            "excluded_rollouts": float(len(self.excluded)),
            "stale_rollouts": float(sum(1 for r in self.excluded if r.error_kind == "stale")),
            "calls": float(len(calls)),
            "completion_tokens_mean": (sum(completion_tokens) / len(completion_tokens)) if calls else 0.0,
            **counts,
        }


def stale_call(
    traces: Sequence[TraceRecord], versions: Sequence[str], trained: Sequence[str] | None = None
) -> str | None:
    """Why a rollout is stale: its first call of a ``trained`` predictor (None: any) answered by a model
    (the trace's ``model``: the name the server's answer gave) not in ``versions``; None when fresh."""
    allowed = set(versions)
    wanted = set(trained) if trained is not None else None
    for trace in traces:
        if (wanted is None or trace.predictor_name in wanted) and trace.model not in allowed:
            where = f" by {trace.served_by}" if trace.served_by else ""
            return (
                f"{trace.predictor_name} was answered{where} by {trace.model!r}, not by an allowed "
                f"version {sorted(allowed)}"
            )
    return None


def collect_rollouts(
    program: Any,
    examples: Sequence[Example],
    metric: Callable[..., Any],
    *,
    num_rollouts: int,
    temperature: float,
    format_failure_reward: float = 0.0,
    num_threads: int = 16,
    rollout_id_base: int = 0,
    lm_kwargs: dict[str, Any] | None = None,
    progress: Any = None,
    index_base: int = 0,
    versions: Sequence[str] | None = None,
    trained: Sequence[str] | None = None,
) -> RolloutBatch:
    """Run ``program`` ``num_rollouts`` times on each example, concurrently.

    ``program`` should already talk to the served policy with the cache off (see
    ``rl.trainer.rollout_program``). Rollout r of every example gets id ``rollout_id_base + r``.
    ``lm_kwargs`` are extra sampling parameters (``top_p``, ``max_tokens``, ...). Example i is
    numbered ``index_base + i``, so batches of one step collected in several rounds keep apart.
    ``versions``: the model names (adapter versions) the calls of ``trained`` predictors (None: all)
    may have been answered by; a rollout with another is excluded as ``stale`` (None: no check).
    """
    if num_rollouts < 2:
        raise ValueError(f"num_rollouts must be at least 2 for group-relative advantages, got {num_rollouts}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for rollouts (K samples must differ), got {temperature}")
    jobs = [(i, r) for i in range(len(examples)) for r in range(num_rollouts)]
    keys = [f"{index_base + i}:{example_id(ex)}" for i, ex in enumerate(examples)]

    def run(job: tuple[int, int]) -> Rollout:
        index, r = job
        rid = rollout_id_base + r
        result = run_one(program, examples[index], metric, keep_traces=True, rollout_id=rid)
        stale = stale_call(result.traces, versions, trained) if versions is not None else None
        if stale is not None:
            return Rollout(
                index_base + index, keys[index], rid, float("nan"), None, "stale", stale, result.traces
            )
        if result.error_kind is None:
            return Rollout(
                index_base + index,
                keys[index],
                rid,
                result.score,
                result.score,
                traces=result.traces,
                prediction=result.prediction,
            )
        reward = format_failure_reward if result.error_kind in POLICY_FAILURES else float("nan")
        return Rollout(
            index_base + index, keys[index], rid, reward, None, result.error_kind, result.error, result.traces
        )

    sampling = {**_settings.current().lm_kwargs, **(lm_kwargs or {}), "temperature": temperature}
    started = time.perf_counter()
    with _settings.context(lm_kwargs=sampling):
        outcomes = parallel_map(run, jobs, num_threads=num_threads, progress=progress)
    kept: list[Rollout] = []
    excluded: list[Rollout] = []
    for outcome, (index, r) in zip(outcomes, jobs, strict=True):
        if outcome.error is not None:
            # A metric bug, or the server's circuit breaker open (no rollout can succeed): stop.
            if isinstance(outcome.error, (MetricError, LMUnavailableError)):
                raise outcome.error
            rollout = Rollout(
                index_base + index,
                keys[index],
                rollout_id_base + r,
                float("nan"),
                None,
                "program",
                f"{type(outcome.error).__name__}: {outcome.error}",
            )
        else:
            rollout = outcome.value
        (kept if rollout.error_kind in (None, *POLICY_FAILURES) else excluded).append(rollout)
    batch = RolloutBatch(kept, excluded, time.perf_counter() - started)
    if excluded:
        kinds: dict[str, int] = {}
        for r in excluded:
            kinds[r.error_kind or "?"] = kinds.get(r.error_kind or "?", 0) + 1
        logger.warning(
            "rollouts: %d of %d excluded from training (%s); first error: %s",
            len(excluded),
            len(jobs),
            kinds,
            excluded[0].error,
        )
    return batch
