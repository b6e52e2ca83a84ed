"""What every job works with, opened one way: the run directory, the task, the server, the LM.

    with open_session("eval", cfg, say=say) as session:      # cfg: a job config (run_dir, model,
        program = session.load_program(cfg.program_path)    #      task, server, lm sections)
        result = session.evaluate(program, session.task.split("test"))
        session.finish(score=...)                             # job.json: status done + numbers

A session starts vLLM on ``cfg.model`` (``serving.launch``, the set-up ``dspylite serve`` uses too; the
model resolved by ``sources.models.resolve_model``: a named source or a checkpoint directory) or
connects to ``cfg.server.api_base``; makes the job's LM (cache in the run directory) and adapter the
context defaults; and opens the weight backend (``serving.backend.Backend``: the server, the run
directory's adapter registry, the base model, colocation) the weight optimizers train through. A job
that raises leaves ``job.json`` saying ``failed`` with the error; the server it started is stopped.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dspylite.errors import ConfigError
from dspylite.jobs.report_job import JOB_FILE
from dspylite.jobs.results import score_record, write_data_card
from dspylite.jobs.settings import BootstrapSettings, LMSettings, PromptOptimizerSettings
from dspylite.jobs.tasks import Task, load_task
from dspylite.run_dir import RunDir

if TYPE_CHECKING:
    from serving.backend import Backend

logger = logging.getLogger(__name__)

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
    job = {"kind": kind, "status": "running", "started": time.time(), "resumed": bool(previous)}
    earlier = previous.get("activity") or previous.get("earlier_activity")
    if earlier:
        # The wall-time breakdown of the interrupted run(s) this one resumes (dspylite.activity).
        job["earlier_activity"] = earlier
    run.save_json(JOB_FILE, job)
    return run


# ---- the session -------------------------------------------------------------------------------------


@dataclass
class JobSession:
    """A job's run directory, task, serving handle, LM and weight backend (see the module docstring)."""

    kind: str
    run: RunDir
    task: Task
    server: Any
    lm: Any
    model_dir: str
    # serving.backend.Backend: the server, the run's adapter registry, the base model, the serving
    # precision, the colocation and the LM, which weight optimizers train and publish through.
    backend: Backend
    lm_settings: LMSettings
    say: Say = log_say
    info: dict[str, Any] = field(default_factory=dict)

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
            if settings.spec.learns_from_feedback and self.task.feedback_metric
            else self.task.metric
        )
        return build_prompt_optimizer(settings, metric, run_dir, self.lm_settings.num_threads, lm=self.lm)

    def bootstrap_finetune(self, bootstrap: BootstrapSettings, sft: Any, run_dir: str | Path) -> Any:
        """BootstrapFinetune with the job's ``bootstrap`` and ``sft`` sections, writing to ``run_dir``
        (the session's backend: its server, registry and base model)."""
        from dspylite.optimizers import BootstrapFinetune
        from dspylite.optimizers.bootstrap_finetune import BootstrapFinetuneConfig

        config = BootstrapFinetuneConfig(
            samples_per_example=bootstrap.samples_per_example,
            sample_temperature=bootstrap.sample_temperature,
            sample_seed=bootstrap.sample_seed if bootstrap.sample_seed >= 0 else None,
            run_name=bootstrap.run_name,
            sft=sft,
        )
        return BootstrapFinetune(
            self.task.metric,
            self.backend.for_run(run_dir),
            config,
            multitask=bootstrap.multitask,
            exclude_demos=bootstrap.exclude_demos,
            num_threads=self.lm_settings.num_threads,
        )

    def grpo(self, config: Any, run_dir: str | Path) -> Any:
        """GRPO with the job's ``grpo`` section, writing to ``run_dir`` (the session's backend)."""
        from dspylite.optimizers import GRPO

        return GRPO(self.task.metric, self.backend.for_run(run_dir), config)

    # -- finishing ----------------------------------------------------------------------------------
    def usage(self) -> dict[str, Any]:
        """The LM's token and call counts, plus the adapter's parse failures and JSON fallbacks."""
        from dspylite import settings

        usage = getattr(self.lm, "usage", None)
        usage = dict(usage) if isinstance(usage, dict) else {}
        adapter = settings.current().adapter
        if adapter is not None:
            counts = dict(adapter.usage)
            if adapter.fallback is not None:
                counts["fallback_parse_failures"] = adapter.fallback.usage["parse_failures"]
            usage["adapter"] = {"name": adapter.name, **counts}
        return usage

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


# Jobs that never train beside the server: server.colocate=auto leaves vLLM alone for them.
PROMPT_ONLY_JOBS = ("eval", "optimize")


@contextlib.contextmanager
def open_session(
    kind: str, cfg: Any, *, say: Say = log_say, task: Task | None = None
) -> Iterator[JobSession]:
    """Open the job's run directory, task, server and LM (see the module docstring); ``cfg`` needs
    ``run_dir``, ``model``, ``task``, ``server`` and ``lm``. The server is stopped when the block ends."""
    import dspylite
    from serving.backend import Backend

    task = task if task is not None else load_task(cfg.task)
    run = open_run(cfg.run_dir, cfg, kind)
    write_data_card(run, task)
    try:
        with Backend.open(
            cfg.model,
            cfg.server,
            run.path,
            lm_kwargs=lm_kwargs(cfg.lm, run),
            trains=kind not in PROMPT_ONLY_JOBS,
            say=say,
        ) as backend:
            server, lm = backend.server, backend.base_lm
            session = JobSession(
                kind=kind,
                run=run,
                task=task,
                server=server,
                lm=lm,
                model_dir=backend.model_dir,
                backend=backend,
                lm_settings=cfg.lm,
                say=say,
                info={"api_base": ", ".join(cfg.server.api_bases)},
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


def lm_kwargs(settings: LMSettings, run: RunDir) -> dict[str, Any]:
    """The job LM's settings: its cache lives in the run directory (a resumed job replays finished
    calls, and no other run's entries can change its numbers)."""
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
    return kwargs


def make_adapter(settings: LMSettings) -> Any:
    from dspylite.adapters import ChatAdapter, JSONAdapter

    if settings.adapter == "json":
        return JSONAdapter()
    return ChatAdapter(use_json_adapter_fallback=settings.json_fallback)


# ---- optimizers and results ------------------------------------------------------------------------


def build_prompt_optimizer(
    settings: PromptOptimizerSettings, metric: Any, run_dir: str | Path, num_threads: int, *, lm: Any = None
) -> Any:
    """The optimizer ``settings.kind`` names in the optimizer table, writing its trials and report to
    ``run_dir``. ``lm``: the task LM, which GEPA reflects with unless its section names another."""
    optimizer = settings.spec.load()
    return optimizer(
        metric=metric, run_dir=run_dir, num_threads=num_threads, **settings.optimizer_kwargs(task_lm=lm)
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
