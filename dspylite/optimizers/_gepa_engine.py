"""gepa's engine assembled the way ``gepa.optimize`` does, but on ONE random stream we can checkpoint.

``gepa.optimize`` seeds a private ``random.Random`` for candidate selection, minibatch order and
merge, and none of it is saved in gepa's checkpoint, so a resumed run draws differently from the
killed one. Built here, the selector, the batch sampler and the merge proposer share ``rng``; the
adapter snapshots that stream, the sampler's epoch order and the merge schedule into gepa's
checkpoint (``get_adapter_state``), and they come back on resume. The merge schedule is put back at
the first iteration's start, because ``GEPAEngine.run`` resets it after loading the checkpoint.
"""

from __future__ import annotations

import random
from typing import Any


class CheckpointedSearch:
    """The search's random stream, minibatch order and merge schedule, as gepa checkpoint state."""

    def __init__(self, rng: random.Random, batch_sampler: Any):
        self.rng = rng
        self.batch_sampler = batch_sampler
        self.merge_proposer: Any = None
        self._pending_merge: dict[str, Any] | None = None

    def snapshot(self) -> dict[str, Any]:
        sampler = self.batch_sampler
        data: dict[str, Any] = {
            "rng": self.rng.getstate(),
            "sampler": {
                "shuffled_ids": list(sampler.shuffled_ids),
                "epoch": sampler.epoch,
                "id_freqs": dict(sampler.id_freqs),
                "last_trainset_size": sampler.last_trainset_size,
            },
        }
        merge = self.merge_proposer
        if merge is not None:
            data["merge"] = {
                "merges_due": merge.merges_due,
                "total_merges_tested": merge.total_merges_tested,
                "last_iter_found_new_program": merge.last_iter_found_new_program,
                "merges_performed": merge.merges_performed,
            }
        return data

    def restore(self, data: dict[str, Any]) -> None:
        from collections import Counter

        if not data:
            return
        self.rng.setstate(data["rng"])
        saved = data.get("sampler") or {}
        sampler = self.batch_sampler
        sampler.shuffled_ids = list(saved.get("shuffled_ids", []))
        sampler.epoch = saved.get("epoch", -1)
        sampler.id_freqs = Counter(saved.get("id_freqs", {}))
        sampler.last_trainset_size = saved.get("last_trainset_size", 0)
        self._pending_merge = data.get("merge")

    # a gepa callback: the engine has reset the merge schedule by the time the first iteration starts
    def on_iteration_start(self, event: Any) -> None:
        if self._pending_merge is not None and self.merge_proposer is not None:
            for key, value in self._pending_merge.items():
                setattr(self.merge_proposer, key, value)
        self._pending_merge = None


def build_engine(
    *,
    adapter: Any,
    search: CheckpointedSearch,
    seed_candidate: dict[str, str],
    trainset: list[Any],
    valset: list[Any],
    candidate_selection_strategy: str,
    component_selector: str,
    skip_perfect_score: bool,
    perfect_score: float,
    use_merge: bool,
    max_merge_invocations: int,
    stoppers: list[Any],
    run_dir: str,
    logger: Any,
    callbacks: list[Any],
    seed: int,
    progress: bool,
) -> Any:
    """A ``GEPAEngine`` with gepa.optimize's defaults (strict improvement, full val eval, instance frontier)."""
    from gepa.core.data_loader import ensure_loader
    from gepa.core.engine import GEPAEngine
    from gepa.logging.experiment_tracker import create_experiment_tracker
    from gepa.proposer.merge import MergeProposer
    from gepa.proposer.reflective_mutation.reflective_mutation import ReflectiveMutationProposer
    from gepa.strategies.acceptance import StrictImprovementAcceptance
    from gepa.strategies.candidate_selector import CurrentBestCandidateSelector, ParetoCandidateSelector
    from gepa.strategies.component_selector import (
        AllReflectionComponentSelector,
        RoundRobinReflectionComponentSelector,
    )
    from gepa.strategies.eval_policy import FullEvaluationPolicy
    from gepa.utils import CompositeStopper, FileStopper

    train_loader, val_loader = ensure_loader(trainset), ensure_loader(valset)
    selector = (
        ParetoCandidateSelector(rng=search.rng)
        if candidate_selection_strategy == "pareto"
        else CurrentBestCandidateSelector()
    )
    module_selector = (
        AllReflectionComponentSelector()
        if component_selector == "all"
        else RoundRobinReflectionComponentSelector()
    )
    tracker = create_experiment_tracker()
    callbacks = [search, *callbacks]
    reflective = ReflectiveMutationProposer(
        logger=logger,
        trainset=train_loader,
        adapter=adapter,
        candidate_selector=selector,
        module_selector=module_selector,
        batch_sampler=search.batch_sampler,
        perfect_score=perfect_score,
        skip_perfect_score=skip_perfect_score,
        experiment_tracker=tracker,
        callbacks=callbacks,
    )
    merge = None
    if use_merge:

        def evaluator(batch: list[Any], candidate: dict[str, str]) -> Any:
            out = adapter.evaluate(batch, candidate, capture_traces=False)
            return out.outputs, out.scores, out.objective_scores

        merge = MergeProposer(
            logger=logger,
            valset=val_loader,
            evaluator=evaluator,
            use_merge=True,
            max_merge_invocations=max_merge_invocations,
            rng=search.rng,
            callbacks=callbacks,
        )
    search.merge_proposer = merge
    # gepa.optimize adds the same file stopper: touching <run_dir>/gepa.stop ends the search cleanly.
    stop = CompositeStopper(*stoppers, FileStopper(f"{run_dir}/gepa.stop"))
    return GEPAEngine(
        adapter=adapter,
        run_dir=run_dir,
        valset=val_loader,
        seed_candidate=seed_candidate,
        perfect_score=perfect_score,
        seed=seed,
        reflective_proposer=reflective,
        merge_proposer=merge,
        frontier_type="instance",
        logger=logger,
        experiment_tracker=tracker,
        callbacks=callbacks,
        track_best_outputs=False,
        display_progress_bar=progress,
        raise_on_exception=True,
        stop_callback=stop,
        val_evaluation_policy=FullEvaluationPolicy(),
        acceptance_criterion=StrictImprovementAcceptance(),
    )
