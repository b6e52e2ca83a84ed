"""MIPROv2: propose instructions, bootstrap demo sets, then search the combinations with Optuna's TPE.

1. Demo sets per predictor: the student's own demos (usually none), labeled-only, bootstrapped in
   trainset order, then bootstraps from shuffled trainsets with random sizes (``num_candidates`` sets).
2. Instruction candidates per predictor: the current instruction plus ``num_candidates - 1``
   proposals from the proposer LM (``prompt_model``, which may differ from ``task_model``), grounded
   in a data summary and the program's signatures.
3. Search: each trial picks (instruction, demo set) per predictor with TPE (seeded per trial, so a
   resumed search asks exactly what an uninterrupted one would) and scores it on a minibatch of the
   valset; every ``minibatch_full_eval_steps`` trials the best-averaging combination not yet fully
   scored is scored on the whole valset. The best full score wins; trial 0 is the program as given.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dspylite import settings as _settings
from dspylite.errors import OptimizerError
from dspylite.example import Example
from dspylite.optimizers._compile import OpenedCompile, PromptOptimizer
from dspylite.optimizers._eval import (
    EvalOutcome,
    Metric,
    ProgramScorer,
    check_metric,
    check_positive,
    strip_demos,
)
from dspylite.optimizers._proposer import InstructionProposer, Proposals
from dspylite.optimizers._run import OptimizerRun, fingerprint_value, trial_bar
from dspylite.optimizers.bootstrap import Bootstrapper
from dspylite.optimizers.labeled_fewshot import attach_labeled
from dspylite.run_dir import RunDir
from dspylite.trace import _jsonable

logger = logging.getLogger(__name__)

# Budgets by ``auto``: candidates per predictor (instructions and demo sets) and the valset size cap.
AUTO_SETTINGS: dict[str, dict[str, int]] = {
    "light": {"num_candidates": 6, "val_size": 100},
    "medium": {"num_candidates": 12, "val_size": 300},
    "heavy": {"num_candidates": 18, "val_size": 1000},
}

DemoSet = dict[str, list[dict[str, Any]]]


def default_num_trials(num_predictors: int, num_candidates: int, with_demos: bool) -> int:
    """Enough trials to try each choice of each variable a couple of times (log-scaled)."""
    num_vars = num_predictors * (2 if with_demos else 1)
    return max(int(2 * num_vars * math.log2(max(2, num_candidates))), int(1.5 * num_candidates), 1)


class MIPROv2(PromptOptimizer):
    def __init__(
        self,
        metric: Metric,
        prompt_model: Any = None,
        task_model: Any = None,
        teacher_settings: dict | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 4,
        auto: str | None = "light",
        num_candidates: int | None = None,
        num_trials: int | None = None,
        minibatch: bool = True,
        minibatch_size: int = 35,
        minibatch_full_eval_steps: int = 5,
        num_threads: int = 8,
        max_errors: int | None = None,
        seed: int = 9,
        init_temperature: float = 0.5,
        metric_threshold: float | None = None,
        *,
        max_rounds: int = 1,
        max_lm_calls: int | None = None,
        run_dir: str | Path | RunDir | None = None,
        progress: bool = True,
        program_aware_proposer: bool = True,
        data_aware_proposer: bool = True,
        tip_aware_proposer: bool = True,
        view_data_batch_size: int = 10,
    ):
        check_metric(metric, "MIPROv2")
        if auto not in (None, *AUTO_SETTINGS):
            raise OptimizerError(f"MIPROv2 auto must be one of {sorted(AUTO_SETTINGS)} or None, got {auto!r}")
        if auto is None and (num_candidates is None or num_trials is None):
            raise OptimizerError("MIPROv2 with auto=None needs num_candidates=... and num_trials=...")
        for name, value in (
            ("max_bootstrapped_demos", max_bootstrapped_demos),
            ("max_labeled_demos", max_labeled_demos),
        ):
            check_positive(value, name, allow_zero=True)
        for name, value in (
            ("num_candidates", num_candidates),
            ("num_trials", num_trials),
            ("minibatch_size", minibatch_size),
            ("minibatch_full_eval_steps", minibatch_full_eval_steps),
            ("num_threads", num_threads),
            ("max_rounds", max_rounds),
            ("max_lm_calls", max_lm_calls),
            ("view_data_batch_size", view_data_batch_size),
        ):
            check_positive(value, name)
        self.metric = metric
        self.prompt_model = prompt_model
        self.task_model = task_model
        self.teacher_settings = teacher_settings or {}
        self.max_bootstrapped_demos = max_bootstrapped_demos
        self.max_labeled_demos = max_labeled_demos
        self.auto = auto
        self.num_candidates = num_candidates
        self.num_trials = num_trials
        self.minibatch = minibatch
        self.minibatch_size = minibatch_size
        self.minibatch_full_eval_steps = minibatch_full_eval_steps
        self.num_threads = num_threads
        self.max_errors = max_errors
        self.seed = seed
        self.init_temperature = init_temperature
        self.metric_threshold = metric_threshold
        self.max_rounds = max_rounds
        self.max_lm_calls = max_lm_calls
        self.run_dir = run_dir
        self.progress = progress
        self.program_aware_proposer = program_aware_proposer
        self.data_aware_proposer = data_aware_proposer
        self.tip_aware_proposer = tip_aware_proposer
        self.view_data_batch_size = view_data_batch_size
        self.summary: dict[str, Any] = {}

    # ---- settings resolved per compile -------------------------------------------------------------
    def _resolve(self, student: Any, overrides: dict[str, Any]) -> dict[str, Any]:
        cfg = {
            "num_candidates": self.num_candidates,
            "num_trials": self.num_trials,
            "minibatch": self.minibatch,
            "minibatch_size": self.minibatch_size,
            "minibatch_full_eval_steps": self.minibatch_full_eval_steps,
            "max_bootstrapped_demos": self.max_bootstrapped_demos,
            "max_labeled_demos": self.max_labeled_demos,
            "seed": self.seed,
            "val_size": None,
        }
        for key, value in overrides.items():
            if value is not None:
                cfg[key] = value
        for name in ("num_candidates", "num_trials", "minibatch_size", "minibatch_full_eval_steps"):
            check_positive(cfg[name], name)
        if self.auto is not None:
            auto = AUTO_SETTINGS[self.auto]
            cfg["num_candidates"] = cfg["num_candidates"] or auto["num_candidates"]
            cfg["val_size"] = auto["val_size"]
        with_demos = bool(cfg["max_bootstrapped_demos"] or cfg["max_labeled_demos"])
        if cfg["num_trials"] is None:
            cfg["num_trials"] = default_num_trials(
                len(student.predictors()), cfg["num_candidates"], with_demos
            )
        cfg["with_demos"] = with_demos
        return cfg

    def compile(
        self,
        student: Any,
        *,
        trainset: list[Example],
        valset: list[Example] | None = None,
        teacher: Any = None,
        num_trials: int | None = None,
        minibatch: bool | None = None,
        minibatch_size: int | None = None,
        minibatch_full_eval_steps: int | None = None,
        max_bootstrapped_demos: int | None = None,
        max_labeled_demos: int | None = None,
        seed: int | None = None,
        requires_permission_to_run: bool = False,
    ) -> Any:
        trainset, valset = self.checked_data(student, trainset, valset)
        for name, value in (
            ("max_bootstrapped_demos", max_bootstrapped_demos),
            ("max_labeled_demos", max_labeled_demos),
        ):
            check_positive(value, name, allow_zero=True)
        cfg = self._resolve(
            student,
            {
                "num_trials": num_trials,
                "minibatch": minibatch,
                "minibatch_size": minibatch_size,
                "minibatch_full_eval_steps": minibatch_full_eval_steps,
                "max_bootstrapped_demos": max_bootstrapped_demos,
                "max_labeled_demos": max_labeled_demos,
                "seed": seed,
            },
        )
        trainset, valset = _split_valset(trainset, valset, cfg)
        options = {**cfg, **self._options()}
        opened = self.start_run(student, trainset, valset, teacher, options)
        with self._task_context():
            demo_sets = self._demo_sets(student, teacher, trainset, cfg, opened.scorer, opened.run)
            proposals = self._instructions(student, trainset, demo_sets, cfg, opened.run)
            best_params, best_score, baseline = self._search(
                student, valset, demo_sets, proposals, cfg, opened.scorer, opened.run
            )
        compiled = self._build(student, best_params, demo_sets, proposals)
        compiled._compiled = True
        return self._finish(opened, compiled, cfg, demo_sets, proposals, best_params, best_score, baseline)

    def _options(self) -> dict[str, Any]:
        """What the run is fingerprinted by besides the per-compile settings (``_resolve``'s)."""
        return {
            "auto": self.auto,
            "metric_threshold": self.metric_threshold,
            "max_rounds": self.max_rounds,
            "init_temperature": self.init_temperature,
            "teacher_settings": fingerprint_value(self.teacher_settings),
            "prompt_model": fingerprint_value(self.prompt_model),
            "task_model": fingerprint_value(self.task_model),
            "proposer": [
                self.program_aware_proposer,
                self.data_aware_proposer,
                self.tip_aware_proposer,
                self.view_data_batch_size,
            ],
        }

    @contextlib.contextmanager
    def _task_context(self) -> Iterator[None]:
        if self.task_model is None:
            yield
            return
        with _settings.context(lm=self.task_model):
            yield

    # ---- step 1: demo sets -----------------------------------------------------------------------------
    def _demo_sets(
        self,
        student: Any,
        teacher: Any,
        trainset: list[Example],
        cfg: dict[str, Any],
        scorer: ProgramScorer,
        run: OptimizerRun,
    ) -> list[DemoSet]:
        saved = run.load_json("demo_candidates.json")
        if saved is not None:
            return saved
        names = [n for n, _ in student.named_predictors()]
        current: DemoSet = {n: [_demo_json(d) for d in p.demos] for n, p in student.named_predictors()}
        sets: list[DemoSet] = [current]
        if cfg["with_demos"]:
            if any(current.values()):
                sets.append({n: [] for n in names})  # zero-shot, when the student came with demos
            n_sets = max(cfg["num_candidates"], len(sets))
            passed_any = False
            k = 0
            while len(sets) < n_sets and not run.budget.exhausted:
                program, passed = self._demo_candidate(k, student, teacher, trainset, cfg, scorer, run)
                passed_any |= passed
                sets.append({n: [_demo_json(d) for d in p.demos] for n, p in program.named_predictors()})
                k += 1
            if cfg["max_bootstrapped_demos"] and not passed_any and k > 0:
                run.warn(
                    "the teacher never passed the metric while bootstrapping demo sets: they hold labeled "
                    "demos only"
                )
            if run.budget.exhausted:
                run.warn("the LM-call budget ran out while bootstrapping demo sets")
        unique: list[DemoSet] = []
        for demo_set in sets:
            if demo_set not in unique:
                unique.append(demo_set)
        if not run.budget.exhausted:
            run.save_json("demo_candidates.json", unique)
        return unique

    def _demo_candidate(
        self,
        k: int,
        student: Any,
        teacher: Any,
        trainset: list[Example],
        cfg: dict[str, Any],
        scorer: ProgramScorer,
        run: OptimizerRun,
    ) -> tuple[Any, bool]:
        max_boot, max_lab, seed = cfg["max_bootstrapped_demos"], cfg["max_labeled_demos"], cfg["seed"]
        if k == 0 and max_lab:
            return attach_labeled(strip_demos(student.deepcopy()), trainset, max_lab, seed=seed), False
        if not max_boot:  # labeled-only search space: more labeled draws
            return attach_labeled(strip_demos(student.deepcopy()), trainset, max_lab, seed=seed + k), False
        shuffled = list(trainset)
        size = max_boot
        if k >= 2 or (k >= 1 and not max_lab):
            rng = random.Random(f"{seed}:demos:{k}")
            rng.shuffle(shuffled)
            size = rng.randint(1, max_boot)
        bootstrapper = Bootstrapper.for_optimizer(
            self,
            max_bootstrapped_demos=size,
            max_labeled_demos=max_lab,
            labeled_seed=seed,
            scorer=scorer,
            run=run,
        )
        outcome = bootstrapper.bootstrap(student, teacher, shuffled, tag=f"demos_{k}")
        return outcome.program, outcome.n_passed > 0

    # ---- step 2: instructions ------------------------------------------------------------------------
    def _instructions(
        self,
        student: Any,
        trainset: list[Example],
        demo_sets: list[DemoSet],
        cfg: dict[str, Any],
        run: OptimizerRun,
    ) -> Proposals:
        saved = run.load_json("instruction_candidates.json")
        if saved is not None:
            return Proposals.from_json(saved)
        proposer = InstructionProposer(
            lm=self.prompt_model or self.task_model,
            budget=run.budget,
            seed=cfg["seed"],
            temperature=self.init_temperature,
            num_threads=self.num_threads,
            data_aware=self.data_aware_proposer,
            program_aware=self.program_aware_proposer,
            tip_aware=self.tip_aware_proposer,
            view_data_batch_size=self.view_data_batch_size,
        )
        if cfg["num_candidates"] <= 1 or run.budget.exhausted:
            return Proposals({n: [p.signature.instructions] for n, p in student.named_predictors()})
        proposals = proposer.propose(student, trainset, demo_sets, cfg["num_candidates"])
        usable = sum(len(v) - 1 for v in proposals.instructions.values())
        logger.info(
            "MIPROv2: %d usable instruction proposals of %d asked (failures: %s)",
            usable,
            proposals.attempted,
            proposals.failures or "none",
        )
        if usable == 0:
            run.warn(
                f"the proposer LM gave no usable instruction ({proposals.attempted} asked, failures: "
                f"{proposals.failures or 'none'}); only the current instructions are searched"
            )
        if not run.budget.exhausted:
            run.save_json("instruction_candidates.json", proposals.to_json())
        return proposals

    # ---- step 3: the search ------------------------------------------------------------------------------
    @staticmethod
    def _build(student: Any, params: dict[str, int], demo_sets: list[DemoSet], proposals: Proposals) -> Any:
        program = student.deepcopy()
        for name, predictor in program.named_predictors():
            i = params.get(f"{name}:instruction", 0)
            j = params.get(f"{name}:demos", 0)
            predictor.signature = predictor.signature.with_instructions(proposals.instructions[name][i])
            predictor.demos = [Example(**d) for d in demo_sets[j].get(name, [])]
        return program

    def _search(
        self,
        student: Any,
        valset: list[Example],
        demo_sets: list[DemoSet],
        proposals: Proposals,
        cfg: dict[str, Any],
        scorer: ProgramScorer,
        run: OptimizerRun,
    ) -> tuple[dict[str, int], float, float]:
        import optuna

        space: dict[str, list[int]] = {}
        for name, _ in student.named_predictors():
            if len(proposals.instructions[name]) > 1:
                space[f"{name}:instruction"] = list(range(len(proposals.instructions[name])))
            if len(demo_sets) > 1:
                space[f"{name}:demos"] = list(range(len(demo_sets)))
        distributions = {k: optuna.distributions.CategoricalDistribution(v) for k, v in space.items()}
        default = dict.fromkeys(space, 0)
        rows = {
            (r["trial"], r["kind"]): r for r in run.rows if r.get("kind") in ("default", "minibatch", "full")
        }

        def evaluate(params: dict[str, int], examples: list[Example], desc: str) -> EvalOutcome | None:
            outcome = scorer.evaluate(self._build(student, params, demo_sets, proposals), examples, desc=desc)
            return outcome if outcome.complete else None

        # Trial 0: the program as given, on the whole valset (the "before" score).
        if (0, "default") in rows:
            baseline = rows[(0, "default")]["score"]
        else:
            outcome = evaluate(default, valset, "Default program")
            if outcome is None:
                run.warn(
                    f"the LM-call budget (max_lm_calls={self.max_lm_calls}) ran out before the program as given "
                    "was scored; returning it unchanged"
                )
                return default, None, None
            baseline = outcome.score
            run.record({"kind": "default", "trial": 0, "params": default, "score": baseline, "n": outcome.n})
        best_params, best_score = default, baseline
        run.save_program(self._build(student, best_params, demo_sets, proposals))
        if not space:
            run.warn("nothing to search: one instruction and one demo set per predictor")
            return best_params, best_score, baseline

        use_minibatch = cfg["minibatch"] and cfg["minibatch_size"] < len(valset)
        fully_scored = {json.dumps(default, sort_keys=True)}
        num_trials = cfg["num_trials"]
        bar = trial_bar(num_trials, "MIPROv2 trials", show=self.progress)
        stopped = False
        with _quiet_optuna():
            study = optuna.create_study(
                direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg["seed"])
            )
            study.add_trial(
                optuna.trial.create_trial(params=default, distributions=distributions, value=baseline)
            )
            for t in range(1, num_trials + 1):
                kind = "minibatch" if use_minibatch else "full"
                row = rows.get((t, kind))
                if row is None:
                    if run.budget.exhausted:
                        stopped = True
                        break
                    # Re-seeding per trial makes trial t's suggestion depend only on the history, which a
                    # resumed run replays exactly.
                    study.sampler = optuna.samplers.TPESampler(
                        seed=_trial_seed(cfg["seed"], t), multivariate=True
                    )
                    trial = study.ask()
                    params = {k: trial.suggest_categorical(k, v) for k, v in space.items()}
                    examples = (
                        random.Random(f"{cfg['seed']}:{t}").sample(valset, cfg["minibatch_size"])
                        if use_minibatch
                        else valset
                    )
                    outcome = evaluate(params, examples, f"Trial {t}")
                    if outcome is None:
                        study.tell(trial, state=optuna.trial.TrialState.FAIL)
                        stopped = True
                        break
                    study.tell(trial, outcome.score)
                    row = run.record(
                        {"kind": kind, "trial": t, "params": params, "score": outcome.score, "n": outcome.n}
                    )
                else:
                    study.add_trial(
                        optuna.trial.create_trial(
                            params=row["params"], distributions=distributions, value=row["score"]
                        )
                    )
                if kind == "full":
                    fully_scored.add(json.dumps(row["params"], sort_keys=True))
                    if row["score"] > best_score:
                        best_params, best_score = dict(row["params"]), row["score"]
                        run.save_program(self._build(student, best_params, demo_sets, proposals))
                elif t % cfg["minibatch_full_eval_steps"] == 0 or t == num_trials:
                    full = rows.get((t, "full"))
                    if full is None:
                        params = _best_unscored(run.rows, fully_scored)
                        if params is not None:
                            outcome = evaluate(params, valset, f"Full eval after trial {t}")
                            if outcome is None:
                                stopped = True
                                break
                            full = run.record(
                                {
                                    "kind": "full",
                                    "trial": t,
                                    "params": params,
                                    "score": outcome.score,
                                    "n": outcome.n,
                                }
                            )
                    if full is not None:
                        fully_scored.add(json.dumps(full["params"], sort_keys=True))
                        if full["score"] > best_score:
                            best_params, best_score = dict(full["params"]), full["score"]
                            run.save_program(self._build(student, best_params, demo_sets, proposals))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(best=best_score)
        if bar is not None:
            bar.close()
        if stopped:
            run.warn(
                f"the LM-call budget (max_lm_calls={self.max_lm_calls}) ran out during the search; "
                "the best fully scored program so far is returned"
            )
        return best_params, best_score, baseline

    # ---- report ----------------------------------------------------------------------------------------
    def _finish(
        self,
        opened: OpenedCompile,
        compiled: Any,
        cfg: dict[str, Any],
        demo_sets: list[DemoSet],
        proposals: Proposals,
        best_params: dict[str, int],
        best_score: float,
        baseline: float,
    ) -> Any:
        rows = [r for r in opened.run.rows if r.get("kind") in ("default", "minibatch", "full")]
        table = [
            {
                "trial": r["trial"],
                "kind": r["kind"],
                "params": _params_text(r["params"]),
                "score": r["score"],
                "n": r["n"],
                "lm_calls": r["lm_calls"],
            }
            for r in rows
        ]
        logger.info(
            "MIPROv2: valset score %s -> %s (%s) after %d LM calls",
            baseline,
            best_score,
            _params_text(best_params),
            opened.run.budget.calls,
        )
        instr_lines = []
        for name, texts in proposals.instructions.items():
            instr_lines.append(f"**{name}**")
            instr_lines += [f"{i}. {t[:300]}" for i, t in enumerate(texts)]
        demo_lines = [
            f"- set {i}: " + ", ".join(f"{n}={len(v)}" for n, v in ds.items())
            for i, ds in enumerate(demo_sets)
        ]
        extra = [("Instruction candidates", "\n".join(instr_lines)), ("Demo sets", "\n".join(demo_lines))]
        if proposals.data_summary:
            extra.append(("Data summary (by the proposer LM)", proposals.data_summary))
        series = {
            "minibatch": (
                [r["trial"] for r in rows if r["kind"] == "minibatch"],
                [r["score"] for r in rows if r["kind"] == "minibatch"],
            ),
            "full valset": (
                [r["trial"] for r in rows if r["kind"] in ("default", "full")],
                [r["score"] for r in rows if r["kind"] in ("default", "full")],
            ),
        }
        return self.finish_compile(
            opened,
            compiled,
            summary={
                "auto": self.auto,
                "num_candidates": cfg["num_candidates"],
                "num_trials": cfg["num_trials"],
                "valset_size": len(opened.valset),
                "minibatch_size": cfg["minibatch_size"] if cfg["minibatch"] else None,
                "score_before": baseline,
                "score_after": best_score,
                "best_params": _params_text(best_params),
                "demo_sets": len(demo_sets),
                "instruction_candidates": {k: len(v) for k, v in proposals.instructions.items()},
                "proposer_failures": proposals.failures,
            },
            trial_rows=table,
            columns=["trial", "kind", "params", "score", "n", "lm_calls"],
            series=series,
            extra=extra,
        )


def _split_valset(
    trainset: list[Example], valset: list[Example] | None, cfg: dict[str, Any]
) -> tuple[list[Example], list[Example]]:
    """No valset: the last 80% of the trainset (DSPy's split). A valset over ``auto``'s size cap: a
    seeded sample of it."""
    if valset is None:
        if len(trainset) < 2:
            raise OptimizerError(
                "MIPROv2 needs a valset, or a trainset of at least 2 examples to split one from"
            )
        n_val = max(1, int(0.8 * len(trainset))) if len(trainset) > 2 else 1
        trainset, valset = trainset[:-n_val], trainset[-n_val:]
    if cfg["val_size"] is not None and len(valset) > cfg["val_size"]:
        valset = random.Random(cfg["seed"]).sample(valset, cfg["val_size"])
    return trainset, valset


def _demo_json(demo: Any) -> dict[str, Any]:
    data = demo.toDict() if isinstance(demo, Example) else dict(demo)
    return _jsonable(data)


def _trial_seed(seed: int, trial: int) -> int:
    return (seed * 1_000_003 + trial) % (2**32)


def _best_unscored(rows: list[dict[str, Any]], fully_scored: set[str]) -> dict[str, int] | None:
    """The parameters with the best mean minibatch score that have no full score yet."""
    sums: dict[str, list[float]] = {}
    for r in rows:
        if r.get("kind") == "minibatch":
            sums.setdefault(json.dumps(r["params"], sort_keys=True), []).append(r["score"])
    ranked = sorted(
        ((sum(v) / len(v), k) for k, v in sums.items() if k not in fully_scored), key=lambda t: -t[0]
    )
    return json.loads(ranked[0][1]) if ranked else None


def _params_text(params: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "(defaults)"


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    import optuna

    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(previous)
