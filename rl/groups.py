"""Groups of comparable predictor calls, and their group-relative advantages.

A rollout is one run of the whole program on one example; it leaves one TraceRecord per predictor
call and earns one reward (the metric on its final prediction). GRPO compares calls that answered
"the same question", so a group is keyed by ``(example, predictor, call index)``: the i-th call that
predictor made in each of the K rollouts of that example.

Programs may call a predictor a varying number of times per run (a loop, an early exit, a parse
failure that stops the program). The i-th call of a predictor groups only among the rollouts that
made an i-th call; a group left with a single member has nothing to be compared with and is dropped
(counted as ``singleton_groups``). Every member of a group carries its own rollout's reward, so a
rollout that called a predictor three times trains each of those calls with the same reward, each
against the rollouts that made a call at that position.

Advantage of a member: ``(reward - group mean) / (group std + eps)``, with the population standard
deviation (``scale_by_std=False`` keeps only the mean-centring, as in Dr. GRPO). A group whose
rewards are all equal carries no signal under a group-relative baseline and is dropped (counted as
``zero_variance_groups``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Rewards closer than this count as equal: floating metrics (0.1 + 0.2) should not fake variance.
ZERO_VARIANCE_TOL = 1e-8


@dataclass
class Sample:
    """One predictor call to train on, with the advantage of its group."""

    predictor_name: str
    example_key: str
    call_index: int
    rollout_id: int
    reward: float
    advantage: float
    prompt_token_ids: list[int] | None
    completion_token_ids: list[int] | None
    logprobs: list[float] | None = None
    trace: Any = field(default=None, repr=False)

    @property
    def trainable(self) -> bool:
        return bool(self.prompt_token_ids) and bool(self.completion_token_ids)


@dataclass
class Group:
    example_key: str
    predictor_name: str
    call_index: int
    rewards: list[float]
    samples: list[Sample]

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.example_key, self.predictor_name, self.call_index)


@dataclass
class GroupingResult:
    samples: list[Sample]  # members of the kept groups that have token ids, advantages filled in
    groups: list[Group]  # the kept groups
    num_groups: int = 0  # every (example, predictor, call index) seen, kept or not
    zero_variance_groups: int = 0
    singleton_groups: int = 0
    untrainable_samples: int = 0  # kept-group members without token ids (the server did not return them)

    @property
    def zero_variance_fraction(self) -> float:
        """Zero-variance groups among the groups that had at least two members."""
        comparable = self.num_groups - self.singleton_groups
        return self.zero_variance_groups / comparable if comparable else 0.0

    def stats(self) -> dict[str, float]:
        return {
            "groups": float(self.num_groups),
            "groups_kept": float(len(self.groups)),
            "zero_variance_groups": float(self.zero_variance_groups),
            "zero_variance_fraction": self.zero_variance_fraction,
            "singleton_groups": float(self.singleton_groups),
            "train_samples": float(len(self.samples)),
            "untrainable_samples": float(self.untrainable_samples),
        }


def group_advantages(
    rewards: Sequence[float], *, scale_by_std: bool = True, eps: float = 1e-4
) -> list[float]:
    """``(r - mean) / (std + eps)`` with the population std; only ``r - mean`` without scaling."""
    n = len(rewards)
    if n == 0:
        return []
    mean = sum(rewards) / n
    centred = [r - mean for r in rewards]
    if not scale_by_std:
        return centred
    std = math.sqrt(sum(c * c for c in centred) / n)
    return [c / (std + eps) for c in centred]


def is_zero_variance(rewards: Sequence[float]) -> bool:
    return max(rewards) - min(rewards) <= ZERO_VARIANCE_TOL


def build_groups(
    rollouts: Sequence[Any],
    *,
    scale_by_std: bool = True,
    eps: float = 1e-4,
    predictors: Sequence[str] | None = None,
    format_failure_reward: float = 0.0,
) -> GroupingResult:
    """Group the calls of ``rollouts`` and attach advantages (see the module docstring).

    ``rollouts`` need ``example_key``, ``rollout_id``, ``reward`` and ``traces`` (TraceRecords in
    call order). ``predictors`` limits training to those predictor names (None: all). A call whose
    completion did not parse earns ``format_failure_reward`` even when its rollout went on to score
    (ChatAdapter's JSON fallback retried it): the broken completion did not earn the answer.
    """
    wanted = set(predictors) if predictors is not None else None
    members: dict[tuple[str, str, int], list[Sample]] = defaultdict(list)
    for rollout in rollouts:
        counts: dict[str, int] = defaultdict(int)
        for trace in rollout.traces:
            name = trace.predictor_name
            index = counts[name]
            counts[name] += 1
            if wanted is not None and name not in wanted:
                continue
            members[(rollout.example_key, name, index)].append(
                Sample(
                    predictor_name=name,
                    example_key=rollout.example_key,
                    call_index=index,
                    rollout_id=rollout.rollout_id,
                    reward=(
                        float(rollout.reward)
                        if getattr(trace, "error", None) is None
                        else format_failure_reward
                    ),
                    advantage=0.0,
                    prompt_token_ids=trace.prompt_token_ids,
                    completion_token_ids=trace.completion_token_ids,
                    logprobs=trace.logprobs,
                    trace=trace,
                )
            )
    result = GroupingResult(samples=[], groups=[], num_groups=len(members))
    for (example_key, name, index), group_samples in members.items():
        rewards = [s.reward for s in group_samples]
        if len(group_samples) < 2:
            result.singleton_groups += 1
            continue
        if is_zero_variance(rewards):
            result.zero_variance_groups += 1
            continue
        for sample, advantage in zip(
            group_samples, group_advantages(rewards, scale_by_std=scale_by_std, eps=eps), strict=True
        ):
            sample.advantage = advantage
        result.groups.append(Group(example_key, name, index, rewards, group_samples))
        for sample in group_samples:
            if sample.trainable:
                result.samples.append(sample)
            else:
                result.untrainable_samples += 1
    return result
