"""BestOfN and Refine: run a module several times and keep the best-rewarded prediction.

Each attempt runs with its own ``rollout_id`` (so a cached LM gives a fresh sample) and, when the
context samples greedily, at ``temperature=1.0``, as DSPy does. Only the returned attempt's trace
records reach an enclosing ``capture_traces()``: the other attempts' outputs were rejected, and
training on them would teach the model what the reward turned down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dspylite import settings as _settings
from dspylite.errors import MetricError
from dspylite.example import Prediction
from dspylite.modules.module import Module
from dspylite.trace import TraceRecord

logger = logging.getLogger(__name__)

RewardFn = Callable[[dict[str, Any], Prediction], float]
FeedbackFn = Callable[[dict[str, Any], Prediction, float], "str | None"]

SAMPLING_TEMPERATURE = 1.0


@dataclass
class Attempt:
    index: int
    rollout_id: int
    prediction: Prediction
    reward: float
    traces: list[TraceRecord] = field(default_factory=list)


class BestOfN(Module):
    """``BestOfN(module, N, reward_fn, threshold, fail_count=None)``.

    Runs ``module`` up to ``N`` times; returns the first prediction whose ``reward_fn(inputs, pred)``
    reaches ``threshold``, else the best one. An attempt that raises counts as a failure; as in DSPy,
    each call tolerates ``fail_count`` failures (default ``N``; 0 raises the first error) and re-raises
    the next one, and when every attempt fails the last error is raised. A reward that is not a number
    raises ``MetricError`` at once (a bug in the reward function, not a bad sample).
    ``last_attempts`` holds every scored attempt of the latest call, without traces (shared by all
    threads using this module: read it right after the call).
    """

    def __init__(
        self,
        module: Module,
        N: int,
        reward_fn: RewardFn,
        threshold: float,  # noqa: N803 - DSPy's name
        fail_count: int | None = None,
    ):
        if N < 1:
            raise ValueError(f"{type(self).__name__}: N must be >= 1, got {N}")
        if fail_count is not None and fail_count < 0:
            raise ValueError(f"{type(self).__name__}: fail_count must be >= 0, got {fail_count}")
        self.module = module
        self.N = N
        self.threshold = threshold
        self.fail_count = N if fail_count is None else fail_count
        self._reward_fn = reward_fn  # underscore: a function, not part of the program's state
        self.last_attempts: list[Attempt] = []

    def forward(self, **kwargs: Any) -> Prediction:
        state = _settings.current()
        base = state.rollout_id or 0
        lm_kwargs = dict(state.lm_kwargs)
        if not (lm_kwargs.get("temperature") or 0) > 0:
            lm_kwargs["temperature"] = SAMPLING_TEMPERATURE
        attempts: list[Attempt] = []
        best: Attempt | None = None
        # DSPy's failure budget, per call: fail_count failures are tolerated, the next one raises.
        failures, last_error = 0, None
        for index in range(self.N):
            # Distinct ids per (outer rollout, attempt): base * N + index never collides across rollouts.
            rollout_id = base * self.N + index
            module = self._module_for_attempt(index, best, kwargs)
            sink: list[TraceRecord] = []
            try:
                with _settings.context(rollout_id=rollout_id, lm_kwargs=lm_kwargs, trace_sink=sink):
                    prediction = module(**kwargs)
                reward = self._reward(kwargs, prediction)
            except MetricError:
                raise
            except Exception as exc:
                failures += 1
                last_error = exc
                logger.warning(
                    "%s: attempt %d (rollout %d) failed: %s: %s",
                    type(self).__name__,
                    index + 1,
                    rollout_id,
                    type(exc).__name__,
                    exc,
                )
                if failures > self.fail_count:
                    self.last_attempts = _without_traces(attempts)
                    raise
                continue
            attempt = Attempt(index, rollout_id, prediction, reward, sink)
            attempts.append(attempt)
            if best is None or reward > best.reward:
                best = attempt
            if reward >= self.threshold:
                break
        self.last_attempts = _without_traces(attempts)
        if best is None:
            assert last_error is not None
            raise last_error
        if state.trace_sink is not None:
            state.trace_sink.extend(best.traces)
        return best.prediction

    def _reward(self, inputs: dict[str, Any], prediction: Prediction) -> float:
        from dspylite.evaluate import check_score

        # A judge LM called by the reward function is not part of this program's trace.
        with _settings.context(trace_sink=None):
            value = self._reward_fn(inputs, prediction)
        try:
            return check_score(value)
        except MetricError as exc:
            raise MetricError(f"{type(self).__name__} reward_fn: {exc}") from None

    def _module_for_attempt(self, index: int, best: Attempt | None, inputs: dict[str, Any]) -> Module:
        return self.module


def _without_traces(attempts: list[Attempt]) -> list[Attempt]:
    # Kept on the module for inspection; traces hold live predictors, which program copies must not drag along.
    return [Attempt(a.index, a.rollout_id, a.prediction, a.reward) for a in attempts]


class Refine(BestOfN):
    """BestOfN that tells each new attempt how the previous best one fell short.

    The feedback is appended to every predictor's instructions for the next attempt (on a copy of
    the module, so the program itself never changes). ``feedback_fn(inputs, prediction, reward)``
    writes it; by default it states the reward, the threshold and the previous outputs. Pass
    ``feedback=False`` for plain BestOfN behaviour.
    """

    def __init__(
        self,
        module: Module,
        N: int,
        reward_fn: RewardFn,
        threshold: float,  # noqa: N803
        fail_count: int | None = None,
        feedback: bool = True,
        feedback_fn: FeedbackFn | None = None,
    ):
        super().__init__(module, N, reward_fn, threshold, fail_count)
        self.feedback = feedback
        self._feedback_fn = feedback_fn

    def _module_for_attempt(self, index: int, best: Attempt | None, inputs: dict[str, Any]) -> Module:
        if not self.feedback or best is None:
            return self.module
        text = (self._feedback_fn or self._default_feedback)(inputs, best.prediction, best.reward)
        if not text:
            return self.module
        module = self.module.deepcopy()
        for predictor in module.predictors():
            sig = predictor.signature
            predictor.signature = sig.with_instructions(
                f"{sig.instructions}\n\nFeedback on a previous attempt: {text}"
            )
        return module

    def _default_feedback(self, inputs: dict[str, Any], prediction: Prediction, reward: float) -> str:
        from dspylite.coerce import format_value

        outputs = format_value({k: v for k, v in prediction.items()})
        return (
            f"it scored {reward:.3g}, below the target {self.threshold:.3g}. "
            f"Its outputs were {outputs}. Produce a better answer."
        )
