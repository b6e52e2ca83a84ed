"""What every job works with, opened one way: the run directory, the task, the server, the LM.

    with open_session("eval", cfg, say=say) as session:      # cfg: a job config (run_dir, model,
        program = session.load_program(cfg.program_path)    #      task, server, lm sections)
        result = session.evaluate(program, session.task.split("test"))
        session.finish(score=...)                             # job.json: status done + numbers

A session starts vLLM on ``cfg.model`` (resolved by ``serving.models.resolve_model``: a named source or
a checkpoint directory) or connects to ``cfg.server.api_base``; makes the job's LM (cache in the run
directory) and adapter the context defaults; and owns the run directory's adapter registry. A job
that raises leaves ``job.json`` saying ``failed`` with the error; the server it started is stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspylite.errors import ConfigError
from dspylite.jobs.report_job import JOB_FILE
from dspylite.jobs.results import score_record, write_data_card
from dspylite.jobs.settings import LMSettings, PromptOptimizerSettings, ServerSettings
from dspylite.jobs.tasks import Task, load_task
from dspylite.run_dir import RunDir

logger = logging.getLogger(__name__)

API_KEY_ENV = "DSPYLITE_API_KEY"
SECRET_KEYS = ("api_key",)  # config fields never written to disk

Say = Callable[[str], None]


def log_say(message: str) -> None:
    logger.info("%s", message)


# ---- run directory -----------------------------------------------------------------------------------


def redacted(config: Any) -> dict[str, Any]:
    """The config as a dict with every secret replaced by whether it was set."""
    from dspylite.config_io import to_dict

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: ("<set>" if v else "") if k in SECRET_KEYS and isinstance(v, str) else walk(v)
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(to_dict(config) if not isinstance(config, dict) else config)


def open_run(path: str, config: Any, kind: str) -> RunDir:
    """The run directory with its (redacted) config and ``job.json`` (status running) written."""
    if not str(path).strip():
        raise ConfigError("run_dir is empty: give the directory this job writes to, e.g. run_dir=runs/eval")
    run = RunDir(path)
    run.write_config(redacted(config))
    run.adapters_dir.mkdir(parents=True, exist_ok=True)
    previous = run.load_json(JOB_FILE, {}) or {}
    run.save_json(
        JOB_FILE, {"kind": kind, "status": "running", "started": time.time(), "resumed": bool(previous)}
    )
    return run


# ---- the session -------------------------------------------------------------------------------------


@dataclass
class JobSession:
    """A job's run directory, task, serving handle, LM and adapter registry (see the module docstring)."""

    kind: str
    run: RunDir
    task: Task
    server: Any
    lm: Any
    model_dir: str
    registry: Any
    lm_settings: LMSettings
    say: Say = log_say
    info: dict[str, Any] = field(default_factory=dict)
    colocation: Any = None  # serving.colocate.Colocation: what trainers wrap their training phases in

    # -- programs ---------------------------------------------------------------------------------
    def load_program(self, program_path: str = "") -> Any:
        """The task's program, with the saved state at ``program_path`` (demos, instructions, bindings);
        adapters it is bound to that the server lacks are loaded from the registries beside the file."""
        program = self.task.make_program()
        if not program_path:
            return program
        path = Path(program_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"program_path: program file not found: {path}")
        program.load(path)
        self.serve_adapters(program, search_root=path.parent)
        return program

    def serve_adapters(
        self, program: Any, adapters: dict[str, str] | None = None, search_root: Path | None = None
    ) -> list[str]:
        from serving.reattach import serve_bound_adapters

        return serve_bound_adapters(
            program, self.server, adapters=adapters, search_root=search_root or self.run.path
        )

    # -- scoring ------------------------------------------------------------------------------------
    def evaluate(
        self,
        program: Any,
        examples: list[Any],
        metric: Callable[..., Any] | None = None,
        *,
        raise_if_all_failed: bool = True,
    ) -> Any:
        """Score ``program`` on ``examples``. A run in which every example failed raises
        AllExamplesFailedError unless ``raise_if_all_failed=False`` (then it scores 0 and the failures
        are in the result); an unreachable server always raises LMUnavailableError."""
        from dspylite.evaluate import Evaluate

        evaluate = Evaluate(
            devset=examples,
            metric=metric or self.task.metric,
            num_threads=self.lm_settings.num_threads,
            display_progress=True,
            raise_if_all_failed=raise_if_all_failed,
        )
        return evaluate(program)

    def score_splits(
        self, programs: dict[str, Any], splits: tuple[str, ...] = ("dev", "test")
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """Score every program on each split: label -> split -> score record (same examples for all)."""
        scores: dict[str, dict[str, dict[str, Any]]] = {label: {} for label in programs}
        for split in splits:
            examples = self.task.split(split)
            if not examples:
                continue
            for label, program in programs.items():
                self.say(f"scoring the {label} program on {len(examples)} {split} examples ...")
                result = self.evaluate(program, examples)
                scores[label][split] = score_record(result)
                self.run.log_metrics(phase="eval", program=label, split=split, **result.summary())
        return scores

    # -- optimizers ---------------------------------------------------------------------------------
    def prompt_optimizer(self, settings: PromptOptimizerSettings, run_dir: str | Path) -> Any:
        # GEPA learns from the metric's words: the task's feedback metric where it has one.
        metric = (
            self.task.feedback_metric
            if settings.kind == "gepa" and self.task.feedback_metric
            else self.task.metric
        )
        return build_prompt_optimizer(settings, metric, run_dir, self.lm_settings.num_threads, lm=self.lm)

    def bootstrap_finetune(
        self, bootstrap: Any, sft: Any, run_dir: str | Path, run_name: str | None = None
    ) -> Any:
        from dspylite.optimizers import BootstrapFinetune

        return BootstrapFinetune(
            self.task.metric,
            server=self.server,
            model_path=self.model_dir or None,
            config=sft,
            multitask=bootstrap.multitask,
            num_threads=self.lm_settings.num_threads,
            run_dir=run_dir,
            registry=self.registry,
            run_name=run_name or bootstrap.run_name,
            samples_per_example=bootstrap.samples_per_example,
            sample_temperature=bootstrap.sample_temperature,
            sample_seed=bootstrap.sample_seed if bootstrap.sample_seed >= 0 else None,
            lm=self.lm,
            colocation=self.colocation,
        )

    def grpo(
        self, config: Any, run_dir: str | Path, *, metric: Callable[..., Any] | None = None, **kwargs: Any
    ) -> Any:
        from dspylite.optimizers import GRPO

        return GRPO(
            metric or self.task.metric,
            server=self.server,
            model_path=self.model_dir or None,
            config=config,
            run_dir=run_dir,
            lm=self.lm,
            registry=self.registry,
            colocation=self.colocation,
            **kwargs,
        )

    # -- finishing ----------------------------------------------------------------------------------
    def usage(self) -> dict[str, int]:
        usage = getattr(self.lm, "usage", None)
        return dict(usage) if isinstance(usage, dict) else {}

    def describe_model(self) -> str:
        return self.info.get("api_base") or self.model_dir or "the built-in tiny model"

    def finish(self, *, render: bool = True, **fields: Any) -> None:
        """Mark the job done in ``job.json`` with the numbers its report shows, then render the report
        (``render=False`` where a library trainer wrote the report itself)."""
        from dspylite.jobs.report_job import render_report

        job = self.run.load_json(JOB_FILE, {}) or {}
        job.update(
            {
                "kind": self.kind,
                "status": "done",
                "task": self.task.name,
                "model": self.describe_model(),
                "usage": self.usage(),
                **fields,
            }
        )
        self.run.save_json(JOB_FILE, job)
        if render:
            render_report(self.run.path)


@contextlib.contextmanager
def open_session(
    kind: str, cfg: Any, *, say: Say = log_say, task: Task | None = None
) -> Iterator[JobSession]:
    """Open the job's run directory, task, server and LM (see the module docstring); ``cfg`` needs
    ``run_dir``, ``model``, ``task``, ``server`` and ``lm``. The server is stopped when the block ends."""
    import dspylite
    from serving.registry import AdapterRegistry

    task = task if task is not None else load_task(cfg.task)
    run = open_run(cfg.run_dir, cfg, kind)
    write_data_card(run, task)
    try:
        model_dir = _model_dir(cfg.model, cfg.server, say)
        with open_server(model_dir, cfg.server, run, say) as server:
            lm = make_lm(server, cfg.lm, run)
            shared = colocation(server, cfg.server, say)
            session = JobSession(
                kind=kind,
                run=run,
                task=task,
                server=server,
                lm=lm,
                model_dir=model_dir or str(getattr(server, "base_model", "") or ""),
                registry=AdapterRegistry(run.adapters_dir),
                lm_settings=cfg.lm,
                say=say,
                info={"api_base": cfg.server.api_base},
                colocation=shared,
            )
            with dspylite.context(lm=lm, adapter=make_adapter(cfg.lm)):
                yield session
    except BaseException as exc:
        _mark_failed(run, exc)
        raise


def _mark_failed(run: RunDir, exc: BaseException) -> None:
    status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    try:
        job = run.load_json(JOB_FILE, {}) or {}
        if job.get("status") == "done":
            return
        job.update({"status": status, "error": f"{type(exc).__name__}: {exc}"[:2000], "ended": time.time()})
        run.save_json(JOB_FILE, job)
    except OSError:  # the disk that failed the job may refuse this too; the original error matters more
        logger.debug("could not record the failure in %s", run.path / JOB_FILE)


def _model_dir(model: str | None, server: ServerSettings, say: Say) -> str:
    """The base model directory: resolved from ``model``; with a remote server and no model, ''."""
    from serving.models import resolve_model

    if server.api_base and not model:
        return ""
    return resolve_model(model, say)


def api_key(settings: ServerSettings) -> str | None:
    return settings.api_key or os.environ.get(API_KEY_ENV) or None


@contextlib.contextmanager
def open_server(model_dir: str, settings: ServerSettings, run: RunDir, say: Say = log_say) -> Iterator[Any]:
    """The one server set-up: ``connect`` to ``settings.api_base``, or a VLLMServer started here (and stopped)."""
    if settings.api_base:
        from serving import connect

        say(f"using the server at {settings.api_base}")
        connection = connect(
            settings.api_base, api_key=api_key(settings), max_lora_rank=settings.max_lora_rank
        )
        served = set(connection.served_models())
        for name, path in settings.adapters.items():
            if name not in served:
                connection.load_adapter(name, path)
        yield connection
        return
    from serving import VLLMServer

    placement = plan_placement(model_dir, settings, say)
    server = VLLMServer(
        model_dir,
        max_lora_rank=settings.max_lora_rank,
        lora_modules=settings.adapters,
        api_key=api_key(settings),
        log_dir=run.path,
        extra_args=settings.extra_args,
        startup_timeout=settings.startup_timeout,
        devices=settings.devices or None,
        tensor_parallel_size=settings.tensor_parallel_size,
        data_parallel_size=settings.data_parallel_size,
        dtype=None if settings.dtype == "auto" else settings.dtype,
        **placement,
    )
    say(f"starting vLLM on {server.model} (log: {run.path / 'vllm.log'}) ...")
    server.start()
    say(f"vLLM ready in {server.start_seconds or 0:.0f}s at {server.api_base} (serving in {server.dtype})")
    try:
        yield server
    finally:
        server.stop()


def plan_placement(model_dir: str, settings: ServerSettings, say: Say = log_say) -> dict[str, Any]:
    """Where the server and training run, and how they share a GPU: the VLLMServer arguments for
    ``server.colocate`` (sleep mode, or a computed memory split), after checking the device lists.
    Training processes started by this job see ``server.train_devices``."""
    from serving.colocate import server_args
    from serving.devices import use_training_devices

    plan, mode = _placement(settings)
    if plan.train is not None:
        use_training_devices(plan.train)
    split = None
    if mode == "split" and settings.gpu_memory_utilization is None:
        split = _memory_split(model_dir, settings)
        say(f"server.colocate=split: {split.describe()}")
    elif mode == "sleep":
        say("server.colocate=sleep: vLLM sleeps (level 1) around each training phase")
    args = server_args(mode, split)
    if settings.gpu_memory_utilization is not None:
        args["gpu_memory_utilization"] = settings.gpu_memory_utilization
    return args


def _memory_split(model_dir: str, settings: ServerSettings) -> Any:
    import torch

    from serving.memory import ModelShape, memory_split, serving_memory, training_memory

    shape = ModelShape.from_dir(model_dir)
    total = torch.cuda.get_device_properties(0).total_memory
    # Sized for the recipes' defaults: a LoRA of the server's largest rank, micro-batches of 8 x 1024.
    training = training_memory(shape, lora_rank=settings.max_lora_rank, batch_size=8, seq_len=1024)
    serving = serving_memory(shape, max_lora_rank=settings.max_lora_rank)
    return memory_split(total, training, serving, min_kv_tokens=2048)


def _placement(settings: ServerSettings) -> tuple[Any, str]:
    """The checked device plan and the colocation mode that applies here (one computation for the
    server's start-up flags and the trainers' Colocation)."""
    from serving.colocate import effective_mode
    from serving.devices import plan_devices
    from serving.server import vllm_flavor

    plan = plan_devices(
        settings.devices or None,
        settings.train_devices or None,
        tensor_parallel_size=settings.tensor_parallel_size,
        data_parallel_size=settings.data_parallel_size,
    )
    return plan, effective_mode(settings.colocate, flavor=vllm_flavor(), shared=plan.shared)


def colocation(session_server: Any, settings: ServerSettings, say: Say = log_say) -> Any:
    """The Colocation the trainers wrap their training phases in (a no-op unless colocate=sleep)."""
    from serving.colocate import Colocation

    if settings.api_base:
        return Colocation(session_server, "off", say=say)
    _, mode = _placement(settings)
    return Colocation(session_server, "sleep" if mode == "sleep" else "off", say=say)


def make_lm(server: Any, settings: LMSettings, run: RunDir) -> Any:
    """The job's LM: its cache lives in the run directory (a resumed job replays finished calls, and no
    other run's entries can change its numbers)."""
    kwargs: dict[str, Any] = {
        "temperature": settings.temperature,
        "max_tokens": settings.max_tokens,
        "timeout": settings.timeout,
        "num_retries": settings.num_retries,
        "max_consecutive_failures": settings.max_consecutive_failures,
    }
    if settings.cache:
        kwargs["cache_dir"] = str(run.path.resolve() / "lm_cache")
    else:
        kwargs["cache"] = False
    return server.lm(**kwargs)


def make_adapter(settings: LMSettings) -> Any:
    from dspylite.adapters import ChatAdapter, JSONAdapter

    return JSONAdapter() if settings.adapter == "json" else ChatAdapter()


# ---- optimizers and results ------------------------------------------------------------------------

OPTIMIZER_NAMES = {
    "labeled": "LabeledFewShot",
    "bootstrap": "BootstrapFewShot",
    "random_search": "BootstrapFewShotWithRandomSearch",
    "mipro": "MIPROv2",
    "gepa": "GEPA",
}


def build_prompt_optimizer(
    settings: PromptOptimizerSettings, metric: Any, run_dir: str | Path, num_threads: int, *, lm: Any = None
) -> Any:
    """The configured prompt optimizer, writing its trials and report to ``run_dir``. ``lm``: the task
    LM, which GEPA reflects with unless ``settings.reflection_*`` name another endpoint or model."""
    from dspylite import optimizers

    common: dict[str, Any] = {
        "run_dir": run_dir,
        "max_lm_calls": settings.max_lm_calls,
        "seed": settings.seed,
    }
    if settings.kind == "labeled":
        return optimizers.LabeledFewShot(k=settings.k, metric=metric, num_threads=num_threads, **common)
    demos = {
        "max_bootstrapped_demos": settings.max_bootstrapped_demos,
        "max_labeled_demos": settings.max_labeled_demos,
        "max_rounds": settings.max_rounds,
        "metric_threshold": settings.metric_threshold,
        "num_threads": num_threads,
    }
    if settings.kind == "bootstrap":
        return optimizers.BootstrapFewShot(metric=metric, **demos, **common)
    if settings.kind == "random_search":
        return optimizers.BootstrapFewShotWithRandomSearch(
            metric, num_candidate_programs=settings.num_candidate_programs, **demos, **common
        )
    if settings.kind == "mipro":
        return optimizers.MIPROv2(
            metric,
            auto=None if settings.auto == "none" else settings.auto,
            num_candidates=settings.num_candidates,
            num_trials=settings.num_trials,
            minibatch=settings.minibatch,
            minibatch_size=settings.minibatch_size,
            **demos,
            **common,
        )
    if settings.kind == "gepa":
        return optimizers.GEPA(
            metric,
            reflection_lm=reflection_lm(settings, lm),
            auto=None if settings.auto == "none" else settings.auto,
            max_metric_calls=settings.max_metric_calls if settings.auto == "none" else None,
            reflection_minibatch_size=settings.reflection_minibatch_size,
            candidate_selection_strategy=settings.candidate_selection_strategy,
            use_merge=settings.use_merge,
            num_threads=num_threads,
            **common,
        )
    raise ConfigError(f"optimizer.kind={settings.kind!r} is not one of {sorted(OPTIMIZER_NAMES)}")


def reflection_lm(settings: PromptOptimizerSettings, task_lm: Any) -> Any:
    """GEPA's reflection LM: another endpoint/model when configured, else the task LM, sampling."""
    from dspylite.lm import LM

    sampling = {"temperature": settings.reflection_temperature, "max_tokens": settings.reflection_max_tokens}
    if settings.reflection_api_base:
        return LM(
            settings.reflection_model or getattr(task_lm, "model", ""),
            api_base=settings.reflection_api_base,
            api_key=os.environ.get("DSPYLITE_REFLECTION_API_KEY") or None,
            **sampling,
        )
    if task_lm is None:
        raise ConfigError("optimizer.kind=gepa needs a reflection LM: set optimizer.reflection_api_base")
    return task_lm.copy(
        **({"model": settings.reflection_model} if settings.reflection_model else {}), **sampling
    )


def raise_if_every_example_failed(result: Any) -> None:
    """A job never reports a score that no example earned: every example failing is an error (exit 2)."""
    from dspylite.errors import AllExamplesFailedError

    failed = sum(result.error_counts.values())
    if result.results and failed == len(result.results):
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(result.error_counts.items()))
        first = next((r.error for r in result.results if r.error), "")
        raise AllExamplesFailedError(
            f"all {failed} examples failed ({kinds}), so there is no score; first error: {first}",
            error_counts=result.error_counts,
        )
