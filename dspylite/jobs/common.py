"""What every job shares: the server and LM config sections, the run directory, evaluation helpers.

A job runs against either a model directory (vLLM is started here, logging into the run directory,
and stopped at the end) or a server someone else runs (``server.api_base``). Tasks: dspylite.jobs.tasks.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dspylite.errors import ConfigError
from dspylite.jobs.tasks import Task
from dspylite.run_dir import RunDir

logger = logging.getLogger(__name__)

JOB_FILE = "job.json"  # what kind of job wrote a run directory, plus the numbers its report shows
RESULTS_FILE = "results.jsonl"  # one row per evaluated example

Say = Callable[[str], None]


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def log_say(message: str) -> None:
    logger.info("%s", message)


# ---- config sections ------------------------------------------------------------------------------


@dataclass
class ServerSettings:
    api_base: str = field(
        default="",
        metadata=_help(
            "A running OpenAI-compatible server (http://host:port/v1, vLLM with LoRA enabled for weight "
            "jobs); empty: start vLLM on `model` here and stop it at the end."
        ),
    )
    api_key: str = field(default="", metadata=_help("Bearer token for the server, if it wants one."))
    max_lora_rank: int = field(default=16, metadata=_help("--max-lora-rank of a server started here."))
    startup_timeout: float = field(
        default=300.0, metadata=_help("Seconds to wait for vLLM to become healthy.")
    )
    extra_args: list[str] = field(
        default_factory=list,
        metadata=_help(
            "Extra vLLM flags for a server started here, e.g. ['--tensor-parallel-size', '2'] "
            "(see configs/multi_gpu/serve_tp_dp.yaml)."
        ),
    )
    adapters: dict[str, str] = field(
        default_factory=dict,
        metadata=_help(
            "LoRA adapters to serve before the job runs, name -> adapter directory (a program bound to "
            "them can then be loaded)."
        ),
    )


@dataclass
class LMSettings:
    temperature: float = field(default=0.0, metadata=_help("Sampling temperature of the program's LM."))
    max_tokens: int = field(default=256, metadata=_help("Completion budget per predictor call."))
    num_threads: int = field(default=8, metadata=_help("Concurrent program runs against the server."))
    adapter: Literal["chat", "json"] = field(
        default="chat",
        metadata=_help("Prompt format: chat ([[ ## field ## ]] markers, DSPy's ChatAdapter) or json."),
    )
    cache: bool = field(
        default=True, metadata=_help("Cache LM responses in <run_dir>/lm_cache (a rerun resumes cheaply).")
    )


# ---- model and server -----------------------------------------------------------------------------


def resolve_model(model: str, say: Say = log_say) -> str:
    """A model directory: ``model`` when set (it must exist), else the built-in tiny model (built once)."""
    if model:
        path = Path(model).expanduser()
        if not path.exists():
            raise ConfigError(f"model={model!r}: no such directory")
        return str(path.resolve())
    from finetune.tiny_model import build_tiny_model

    say("building (or loading the cached) tiny model ...")
    return str(build_tiny_model())


@contextlib.contextmanager
def open_server(model: str, settings: ServerSettings, run: RunDir, say: Say = log_say) -> Iterator[Any]:
    """A serving handle: ``connect`` to ``settings.api_base``, or a VLLMServer started here (and stopped)."""
    if settings.api_base:
        from serving import connect

        say(f"using the server at {settings.api_base}")
        connection = connect(
            settings.api_base, api_key=settings.api_key or None, max_lora_rank=settings.max_lora_rank
        )
        served = set(connection.served_models())
        for name, path in settings.adapters.items():
            if name not in served:
                connection.load_adapter(name, path)
        yield connection
        return
    from serving import VLLMServer

    server = VLLMServer(
        resolve_model(model, say),
        max_lora_rank=settings.max_lora_rank,
        lora_modules=settings.adapters,
        api_key=settings.api_key or None,
        log_dir=run.path,
        extra_args=settings.extra_args,
        startup_timeout=settings.startup_timeout,
    )
    say(f"starting vLLM on {server.model} (log: {run.path / 'vllm.log'}) ...")
    server.start()
    say(f"vLLM ready in {server.start_seconds or 0:.0f}s at {server.api_base}")
    try:
        yield server
    finally:
        server.stop()


def make_lm(server: Any, settings: LMSettings, run: RunDir) -> Any:
    kwargs: dict[str, Any] = {"temperature": settings.temperature, "max_tokens": settings.max_tokens}
    if settings.cache:
        kwargs["cache_dir"] = str(run.path / "lm_cache")
    else:
        kwargs["cache"] = False
    return server.lm(**kwargs)


def make_adapter(settings: LMSettings) -> Any:
    from dspylite.adapters import ChatAdapter, JSONAdapter

    return JSONAdapter() if settings.adapter == "json" else ChatAdapter()


def load_program(task: Task, program_path: str, server: Any) -> Any:
    """The task's program, with the saved state at ``program_path`` (demos, instructions, adapter bindings).

    Call inside ``dspylite.context(lm=...)``: saved bindings re-attach to that LM's server. Adapters
    the program is bound to but the server lacks are looked up in the registries next to the file.
    """
    program = task.make_program()
    if not program_path:
        return program
    path = Path(program_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"program_path: program file not found: {path}")
    program.load(path)
    ensure_adapters_served(program, server, search_root=path.parent)
    return program


@dataclass
class ProgramSession:
    """What a job works with once its server is up: the server, the job's LM and the loaded program."""

    server: Any
    lm: Any
    program: Any


@contextlib.contextmanager
def open_program_session(
    model: str,
    server_settings: ServerSettings,
    lm_settings: LMSettings,
    run: RunDir,
    task: Task,
    program_path: str,
    say: Say = log_say,
) -> Iterator[ProgramSession]:
    """Serve ``model``, make the job's LM and adapter the context defaults, and load the task's program.

    The program is loaded inside that context because its saved adapter bindings re-attach to the
    context LM's server. The server is stopped when the block ends, as with ``open_server``.
    """
    import dspylite

    with open_server(model, server_settings, run, say) as server:
        lm = make_lm(server, lm_settings, run)
        with dspylite.context(lm=lm, adapter=make_adapter(lm_settings)):
            yield ProgramSession(server, lm, load_program(task, program_path, server))


def ensure_adapters_served(program: Any, server: Any, *, search_root: Path) -> list[str]:
    """Load the adapters ``program`` is bound to that ``server`` does not serve yet; returns their names."""
    from serving import bindings

    served = set(server.served_models())
    wanted = sorted({m for m in bindings(program).values() if m and m not in served})
    loaded = []
    for name in wanted:
        path = find_adapter(name, search_root)
        if path is None:
            raise ConfigError(
                f"the program is bound to adapter {name!r}, which the server does not serve and no "
                f"registry under {search_root} lists; add it as server.adapters.{name}=<adapter dir>"
            )
        server.load_adapter(name, path)
        loaded.append(name)
    return loaded


def find_adapter(name: str, root: Path) -> str | None:
    from serving.registry import INDEX_FILE, AdapterRegistry

    for index in sorted(root.rglob(INDEX_FILE)):
        registry = AdapterRegistry(index.parent)
        if name in registry:
            return registry.get(name).path
    # Trainers that keep no registry still save each version as adapters/<name>/.
    for candidate in sorted(root.rglob(f"adapters/{name}")):
        if (candidate / "adapter_config.json").is_file():
            return str(candidate)
    return None


# ---- evaluation and run files ---------------------------------------------------------------------


def evaluate(program: Any, examples: list[Any], metric: Callable[..., Any], num_threads: int) -> Any:
    from dspylite.evaluate import Evaluate

    return Evaluate(devset=examples, metric=metric, num_threads=num_threads, display_progress=True)(program)


def score_on_splits(
    programs: dict[str, Any], task: Task, run: RunDir, num_threads: int, say: Say = log_say
) -> dict[str, dict[str, dict[str, Any]]]:
    """Score every program on the task's dev and test splits: label -> split -> score record.

    Every program sees the same examples, so reports can compare them split by split; an empty
    split is skipped rather than reported as a zero.
    """
    scores: dict[str, dict[str, dict[str, Any]]] = {label: {} for label in programs}
    for split in ("dev", "test"):
        examples = task.split(split)
        if not examples:
            continue
        for label, program in programs.items():
            say(f"scoring the {label} program on {len(examples)} {split} examples ...")
            result = evaluate(program, examples, task.metric, num_threads)
            scores[label][split] = score_record(result)
            run.log_metrics(phase="eval", program=label, split=split, **result.summary())
    return scores


def score_record(result: Any) -> dict[str, Any]:
    """What reports need from an EvaluationResult: the summary plus the per-example scores (for paired CIs)."""
    return {**result.summary(), "scores": list(result.scores)}


def write_results(run: RunDir, name: str, result: Any) -> Path:
    """One JSON line per example: id, score, error, prediction."""
    from dspylite.evaluate import example_id
    from dspylite.utils.io import atomic_write_text

    lines = []
    for row in result.results:
        prediction = dict(row.prediction.items()) if row.prediction is not None else None
        lines.append(
            json.dumps(
                {
                    "id": example_id(row.example),
                    "score": row.score,
                    "error_kind": row.error_kind,
                    "error": row.error,
                    "prediction": prediction,
                },
                ensure_ascii=False,
                default=str,
            )
        )
    return atomic_write_text(run.path / name, "\n".join(lines) + ("\n" if lines else ""))


def open_run(path: str, config: Any, kind: str) -> RunDir:
    """The run directory with its config written and the standard layout (adapters/ included) in place."""
    run = RunDir(path)
    run.write_config(config)
    run.adapters_dir.mkdir(parents=True, exist_ok=True)
    run.save_json(JOB_FILE, {"kind": kind, "status": "running"})
    return run


def describe_model(model: str, server: ServerSettings) -> str:
    return server.api_base or model or "the built-in tiny model"


def lm_usage(lm: Any) -> dict[str, int]:
    """Token and call totals of the job's LM (calls made through adapter-bound copies count separately)."""
    usage = getattr(lm, "usage", None)
    return dict(usage) if isinstance(usage, dict) else {}


def config_keys(cls: type, prefix: str = "") -> list[tuple[str, Any, str]]:
    """Every leaf key of a config dataclass, dotted (``task.n_dev``), with its default and help text."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    keys: list[tuple[str, Any, str]] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if dataclasses.is_dataclass(hints.get(f.name)):
            keys.extend(config_keys(hints[f.name], f"{prefix}{f.name}."))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "<required>"
        keys.append((f"{prefix}{f.name}", default, f.metadata.get("help", "")))
    return keys
