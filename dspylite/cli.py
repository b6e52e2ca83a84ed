"""The ``dspylite`` command line. Each command is a thin parser over library code; heavy imports
happen inside the commands so ``dspylite --help`` stays fast."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

app = typer.Typer(
    name="dspylite",
    help="Program local LMs the DSPy way, then improve them with prompts and LoRA weights served by vLLM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# Our packages log at INFO (progress lines); everyone else (httpx logs every request) at WARNING.
_OWN_LOGGERS = ("dspylite", "finetune", "rl", "serving", "sources")
ERROR_EXIT_CODE = 2  # bad config, bad input or a failed job: the same code click uses for usage errors


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level.")) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False, markup=False)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(name)s: %(message)s",
        datefmt="[%X]",
        handlers=[handler],
        force=True,
    )
    for name in _OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


def _fail(message: str) -> None:
    """One red line (the first of ``message``; any further lines, e.g. a server log tail, follow plainly)."""
    first, _, rest = str(message).partition("\n")
    typer.secho(f"error: {first}", fg=typer.colors.RED, err=True)
    if rest.strip():
        typer.echo(rest.rstrip(), err=True)
    raise typer.Exit(code=ERROR_EXIT_CODE)


def _say(message: str) -> None:
    """A progress line on stderr, so stdout keeps only results."""
    typer.secho(message, fg=typer.colors.CYAN, err=True)


_CONFIG_ARG_HELP = "YAML job config from configs/, e.g. configs/{}.yaml."


class Terminated(KeyboardInterrupt):
    """SIGTERM during a job: it unwinds like Ctrl-C, so servers stop and ``job.json`` says interrupted."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def _run_job(job, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - any job function
    """Run a library job; its errors become one red line and exit code 2, Ctrl-C exit code 130, SIGTERM
    143 (after the job's servers stop and its run directory records the interruption)."""
    from dspylite.errors import DSPyLiteError

    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if on_main else None
    try:
        return job(*args, **kwargs)
    except DSPyLiteError as exc:
        _fail(str(exc))
    except OSError as exc:  # a full disk, a read-only run directory: name the file, keep exit code 2
        where = f" ({exc.filename})" if exc.filename else ""
        _fail(f"{exc.strerror or exc}{where}; finished work is kept on disk, rerun to resume")
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        typer.secho(f"{what}; rerun the same command to resume", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(code=143 if isinstance(exc, Terminated) else 130) from None
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


_HELP_PARAMS = "dspylite.help_params"  # ctx.meta key: the command's arguments given beside --help


def _leading_positional(items: Optional[list[str]]) -> tuple[Optional[str], list[str]]:
    """``[FIRST] [KEY=VALUE]...``: the first item (a config file or a model) unless it is an override."""
    rest = list(items or [])
    first = rest.pop(0) if rest and "=" not in rest[0] else None
    return first, rest


def _job_config(config_class: str) -> Callable[[dict[str, Any]], Any]:
    """The config a job command loads from its CONFIG and KEY=VALUE arguments (what its job function
    does: ``load_config(cls, config, overrides)``), for --help."""

    def load(params: dict[str, Any]) -> Any:
        from dspylite.config_io import load_config
        from dspylite.jobs.tasks import load_object

        cls = load_object(config_class, (), "config class")
        if "args" in params:  # demo: [CONFIG] [KEY=VALUE]...
            config, overrides = _leading_positional(params["args"])
        else:
            config, overrides = params.get("config"), list(params.get("overrides") or [])
        return load_config(cls, config, overrides)

    return load


def _serve_config(server_only: bool) -> Callable[[dict[str, Any]], Any]:
    """The ServeConfig `dspylite serve` (``server_only``: `doctor`) builds from its arguments, for --help."""

    def load(params: dict[str, Any]) -> Any:
        from serving.serve import load_serve_config

        model, overrides = _leading_positional(params.get("args"))
        return load_serve_config(params.get("config"), overrides, model=model, server_only=server_only)

    return load


def _with_config_keys(load: Optional[Callable[[dict[str, Any]], Any]]) -> type:
    """A command class whose --help ends with every config key, the value the command would use and its
    help text: ``load`` turns the command's parameters into its config (the job's own loader), so
    ``dspylite demo configs/demo_real.yaml --help`` shows that file's values and the bare
    ``dspylite demo --help`` the job config's defaults. The config is imported only when help is shown,
    so startup stays fast."""
    import inspect

    import click
    from typer.core import TyperCommand

    class ConfigCommand(TyperCommand):
        def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
            if "--help" not in args or ctx.resilient_parsing:
                return super().parse_args(ctx, args)
            # Parse what else was given (CONFIG, KEY=VALUE, --config), then show help for those values.
            given = [arg for arg in args if arg != "--help"]
            if given:
                try:
                    super().parse_args(ctx, given)
                except click.UsageError:
                    ctx.params = {}
            ctx.meta[_HELP_PARAMS] = dict(ctx.params)
            click.echo(ctx.get_help(), color=ctx.color)
            ctx.exit()

        def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
            base = getattr(self, "_base_help", None)
            if base is None:
                # Docstrings are hard-wrapped; let the terminal wrap each paragraph instead.
                paragraphs = inspect.cleandoc(self.help or "").split("\n\n")
                base = self._base_help = "\n\n".join(" ".join(p.split("\n")) for p in paragraphs)
            self.help = base
            if load is not None:
                self.help += _config_keys_text(
                    load, ctx.meta.get(_HELP_PARAMS, {}), self.rich_markup_mode == "rich"
                )
            super().format_help(ctx, formatter)

    return ConfigCommand


def help_config(load: Callable[[dict[str, Any]], Any], params: dict[str, Any]) -> tuple[Any, str]:
    """The config --help shows and where its values come from: the given file and overrides, or (with
    none, or when they do not load) the job's defaults."""
    from dspylite.errors import DSPyLiteError

    given = [str(v) for k, v in params.items() if k in ("config", "args", "overrides") and v]
    if not given:
        return load({}), "the defaults"
    try:
        config = load(params)
    except DSPyLiteError as exc:
        return load({}), f"the defaults ({exc})"
    files = [str(params["config"])] if params.get("config") else []
    items = [str(item) for key in ("args", "overrides") for item in (params.get(key) or [])]
    return config, "the values of " + " ".join(files + items)


def _config_keys_text(
    load: Callable[[dict[str, Any]], Any], params: dict[str, Any], rich_markup: bool
) -> str:
    from dspylite.config_io import config_keys
    from dspylite.jobs.session import SECRET_KEYS

    config, source = help_config(load, params)
    lines = []
    for key, value, text in config_keys(config):
        if key.rsplit(".", 1)[-1] in SECRET_KEYS and value:
            value = "<set>"
        lines.append(f"{key} = {value!r}: {text}")
    body = "\n".join(lines)
    if rich_markup:
        from rich.markup import escape

        body, source = escape(body), escape(source)
    return f"\n\nConfig keys (YAML, or KEY=VALUE overrides; nested keys are dotted), with {source}:\n\n{body}"


_OVERRIDES_HELP = (
    "Config overrides, e.g. task.n_dev=50 model=/path/to/ckpt (dotted keys reach nested sections)."
)


# ---- serve ----------------------------------------------------------------------------------------


@app.command(no_args_is_help=True, cls=_with_config_keys(_serve_config(server_only=False)))
def serve(
    args: Optional[list[str]] = typer.Argument(
        None,
        metavar="[MODEL] [KEY=VALUE]...",
        help="The base model (a checkpoint directory or a named source: tiny, smollm2-135m-instruct), then "
        "config overrides such as server.port=8000 server.dtype=float32 server.adapters.sft-1=PATH.",
    ),
    config: Optional[Path] = typer.Option(
        None,
        "--config",
        "-c",
        help="YAML serve config (configs/serve.yaml: model, run_dir and a server: section like every job's); "
        "MODEL and KEY=VALUE override it.",
    ),
    # The flags of the layout before the server schema: each still works, with a warning naming its key.
    adapter: list[str] = typer.Option([], "--adapter", "-a", hidden=True),
    port: Optional[int] = typer.Option(None, hidden=True),
    host: Optional[str] = typer.Option(None, hidden=True),
    served_model_name: Optional[str] = typer.Option(None, hidden=True),
    max_lora_rank: Optional[int] = typer.Option(None, hidden=True),
    max_loras: Optional[int] = typer.Option(None, hidden=True),
    api_key: Optional[str] = typer.Option(None, hidden=True),
    run_dir: Optional[Path] = typer.Option(None, hidden=True),
    startup_timeout: Optional[float] = typer.Option(None, hidden=True),
) -> None:
    """Start vLLM on MODEL with LoRA enabled, load the adapters, and serve until Ctrl-C.

    The server is set up exactly as a job's (the same server: keys; server.dtype=auto picks the
    precision for this hardware). Prints the OpenAI api_base and the served model names (the base
    model and each adapter); point dspylite.LM(model=NAME, api_base=API_BASE) at them.

    Runtime adapter loading (/v1/load_lora_adapter) stays on, so trainers can add new versions later.

    Example: dspylite serve smollm2-135m-instruct server.port=8000 server.adapters.sft-1=runs/sft/adapters/sft-1
    """
    from dspylite.config_io import split_override
    from dspylite.errors import DSPyLiteError
    from serving.serve import load_serve_config, parse_adapter_specs, prepare_server, serve_until_interrupted

    model, items = _leading_positional(args)
    old_flags = {
        "--port": ("server.port", port),
        "--host": ("server.host", host),
        "--served-model-name": ("server.served_model_name", served_model_name),
        "--max-lora-rank": ("server.max_lora_rank", max_lora_rank),
        "--max-loras": ("server.max_loras", max_loras),
        "--api-key": ("server.api_key", api_key),
        "--run-dir": ("run_dir", str(run_dir) if run_dir else None),
        "--startup-timeout": ("server.startup_timeout", startup_timeout),
    }
    try:
        overrides: dict[str, object] = {}
        for flag, (key, value) in old_flags.items():
            if value is not None:
                _warn(f"{flag} is deprecated; use {key}={'***' if flag == '--api-key' else value}")
                overrides[key] = value
        for name, path in parse_adapter_specs(adapter).items():
            _warn(f"--adapter is deprecated; use server.adapters.{name}={path}")
            overrides[f"server.adapters.{name}"] = path
        overrides.update(split_override(item) for item in items)
        cfg = load_serve_config(config, overrides, model=model)
        server = prepare_server(cfg, say=_say)
        typer.echo(f"starting vLLM on {server.model} in {server.dtype} (log: {server.log_path}) ...")
        serve_until_interrupted(server, on_ready=_print_ready)
    except DSPyLiteError as exc:
        _fail(str(exc))
    typer.echo("server stopped")


def _warn(message: str) -> None:
    typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)


def _print_ready(server) -> None:  # noqa: ANN001 - a serving.VLLMServer
    typer.echo(f"vLLM ready in {server.start_seconds:.1f}s (serving in {server.dtype})")
    typer.echo(f"api_base: {server.api_base}")
    for name in server.served_models():
        kind = "adapter" if name in server.loaded_adapters else "base model"
        typer.echo(f"  model: {name} ({kind})")
    typer.echo(f"log: {server.log_path}")
    typer.echo("Ctrl-C to stop.")


# ---- finetune -------------------------------------------------------------------------------------


@app.command(
    no_args_is_help=True, cls=_with_config_keys(_job_config("dspylite.jobs.finetune_job:FinetuneJobConfig"))
)
def finetune(
    config: Path = typer.Argument(..., metavar="CONFIG", help=_CONFIG_ARG_HELP.format("sft")),
    overrides: Optional[list[str]] = typer.Argument(
        None,
        metavar="[KEY=VALUE]...",
        help="Config overrides, e.g. sft.learning_rate=1e-3 model=/path/to/ckpt.",
    ),
) -> None:
    """BootstrapFinetune on a task: teacher traces, LoRA SFT, the adapter served, baseline and tuned scored.

    Writes the run directory (config, metrics.jsonl, data/, checkpoints/, adapters/, program.json,
    report.md, report.png) and prints the scores before and after with their 95% intervals and the
    paired difference.

    Example: dspylite finetune configs/sft.yaml run_dir=runs/sft-lr1e3 sft.learning_rate=1e-3
    """
    from dspylite.jobs.finetune_job import run_finetune_job

    result = _run_job(run_finetune_job, config, list(overrides or []), say=_say)
    _echo_scores(result.scores, "baseline")
    typer.echo(f"adapter: {result.adapter}")
    typer.echo(f"report: {result.run_dir / 'report.md'}")


# ---- grpo -----------------------------------------------------------------------------------------


@app.command(no_args_is_help=True, cls=_with_config_keys(_job_config("dspylite.jobs.grpo_job:GRPOJobConfig")))
def grpo(
    config: Path = typer.Argument(..., metavar="CONFIG", help=_CONFIG_ARG_HELP.format("grpo")),
    overrides: Optional[list[str]] = typer.Argument(
        None,
        metavar="[KEY=VALUE]...",
        help="Config overrides, e.g. grpo.num_steps=20 grpo.init_adapter=runs/sft/...",
    ),
) -> None:
    """GRPO on the built-in task: rollouts from vLLM, LoRA updates, a new adapter version served each step.

    Writes the run directory (config, metrics.jsonl, tensorboard/, checkpoints/, adapters/, program.json,
    report.md, report.png) and prints the val score at the start and of the best version, with 95% intervals,
    and (with task.n_test > 0) both versions' scores on the held-out test split, which never picks a version.
    Re-running with the same run_dir resumes from the last checkpoint.

    Example: dspylite grpo configs/grpo.yaml run_dir=runs/grpo-1 grpo.num_steps=20
    Several GPUs: accelerate launch --multi_gpu --num_processes 2 -m dspylite.cli grpo configs/grpo.yaml ...
    (rank 0 samples, publishes and records; every process trains on its share of each step).
    """
    from dspylite.jobs.grpo_job import run_grpo_job

    result = _run_job(run_grpo_job, config, list(overrides or []), say=_say)
    if result is None:  # a rank other than 0 under `accelerate launch`: rank 0 reports
        return
    for label, point in (("start", result.start), ("best", result.best), ("final", result.final)):
        typer.echo(
            f"{label:>6}: {point.score:.3f}  95% CI [{point.lo:.3f}, {point.hi:.3f}]  "
            f"(step {point.step}, {point.version})"
        )
    diff, low, high = result.improvement()
    typer.echo(f"best - start: {diff:+.3f}  95% CI [{low:+.3f}, {high:+.3f}]")
    test_diff = result.test_improvement()
    if test_diff is not None:
        typer.echo(
            f"held-out test: start {result.test_start.score:.3f}, best {result.test_best.score:.3f}; "
            f"best - start {test_diff[0]:+.3f}  95% CI [{test_diff[1]:+.3f}, {test_diff[2]:+.3f}]"
        )
    typer.echo(f"report: {result.run_dir.report_md}")


# ---- eval -----------------------------------------------------------------------------------------


@app.command(
    "eval", no_args_is_help=True, cls=_with_config_keys(_job_config("dspylite.jobs.eval_job:EvalJobConfig"))
)
def eval_command(
    config: Path = typer.Argument(..., metavar="CONFIG", help=_CONFIG_ARG_HELP.format("eval")),
    overrides: Optional[list[str]] = typer.Argument(None, metavar="[KEY=VALUE]...", help=_OVERRIDES_HELP),
) -> None:
    """Score a program on one split, with a 95% interval and per-example results.

    The program is the built-in Fact QA one by default, or yours (task.name=custom,
    task.program=module:Class, task.dataset=file.jsonl), optionally with a saved program.json.

    Starts vLLM on `model` (default: the built-in tiny model) or uses server.api_base. Writes the run
    directory (config.yaml, metrics.jsonl, program.json, results.jsonl, report.md, report.png) and
    prints the score with its 95% interval.

    Example: dspylite eval configs/eval.yaml program_path=runs/optimize/program.json split=test
    """
    from dspylite.jobs.eval_job import run_eval_job

    result = _run_job(run_eval_job, config, list(overrides or []), say=_say)
    record = result.score
    low, high = record["ci95"]
    typer.echo(
        f"{result.split}: {100 * record['mean']:.1f}%  95% CI [{100 * low:.1f}, {100 * high:.1f}]  "
        f"(n={record['n']}, errors: {record['errors'] or 'none'})"
    )
    typer.echo(f"report: {result.run_dir / 'report.md'}")


# ---- optimize -------------------------------------------------------------------------------------


@app.command(
    no_args_is_help=True, cls=_with_config_keys(_job_config("dspylite.jobs.optimize_job:OptimizeJobConfig"))
)
def optimize(
    config: Path = typer.Argument(..., metavar="CONFIG", help=_CONFIG_ARG_HELP.format("optimize")),
    overrides: Optional[list[str]] = typer.Argument(None, metavar="[KEY=VALUE]...", help=_OVERRIDES_HELP),
) -> None:
    """Optimize the program's prompts (demos, instructions) with a prompt optimizer.

    optimizer.kind picks the optimizer (its line under Config keys lists them all, from the optimizer
    table). The keys they share sit under optimizer., each optimizer's own in its section:
    optimizer.<kind>.<key>, e.g. optimizer.mipro.num_trials or optimizer.gepa.reflection_api_base (GEPA's
    reflection LM on another server).

    Compiles on the train split, selecting on dev; the baseline and the optimized program are then
    scored on dev and on test (never selected on). Writes the run directory (config.yaml, metrics.jsonl,
    program.json, optimizer/ with the optimizer's trials, report.md, report.png); rerunning with the
    same run_dir replays finished trials.

    Example: dspylite optimize configs/optimize.yaml optimizer.kind=mipro optimizer.mipro.auto=light
    """
    from dspylite.jobs.optimize_job import run_optimize_job

    result = _run_job(run_optimize_job, config, list(overrides or []), say=_say)
    _echo_scores(result.scores, "baseline")
    typer.echo(f"program: {result.run_dir / 'program.json'}")
    typer.echo(f"report: {result.run_dir / 'report.md'}")


def _echo_scores(scores: dict, baseline: str) -> None:
    from dspylite.jobs.report_job import diff_cell, score_cell

    for program, splits in scores.items():
        for split, record in splits.items():
            line = f"{program:>10} {split:>5}: {score_cell(record)}  (n={record['n']})"
            if program != baseline and split in scores.get(baseline, {}):
                line += f"  vs {baseline}: {diff_cell(scores[baseline][split], record)}"
            typer.echo(line)


# ---- better-together ------------------------------------------------------------------------------


@app.command(
    "better-together",
    no_args_is_help=True,
    cls=_with_config_keys(_job_config("dspylite.jobs.better_together_job:BetterTogetherJobConfig")),
)
def better_together(
    config: Path = typer.Argument(..., metavar="CONFIG", help=_CONFIG_ARG_HELP.format("better_together")),
    overrides: Optional[list[str]] = typer.Argument(None, metavar="[KEY=VALUE]...", help=_OVERRIDES_HELP),
) -> None:
    """BetterTogether: alternate prompt (p) and weight (w) optimization, keep the best stage.

    w is BootstrapFinetune (LoRA SFT) or GRPO; the strategy is a sequence such as "p -> w -> p", and
    the stage that scores best on held-out dev examples wins.

    Each stage's program, adapter and score is kept in the run directory (stages/, work/, adapters/,
    stages.json); the baseline and the best program are scored on dev and test. Rerunning with the
    same run_dir skips finished stages.

    Example: dspylite better-together configs/better_together.yaml strategy="p -> w" weights=grpo
    """
    from dspylite.jobs.better_together_job import run_better_together_job

    result = _run_job(run_better_together_job, config, list(overrides or []), say=_say)
    typer.echo(f"best stage: {result.best_stage}")
    _echo_scores(result.scores, "baseline")
    typer.echo(f"report: {result.run_dir / 'report.md'}")


# ---- demo -----------------------------------------------------------------------------------------


@app.command(cls=_with_config_keys(_job_config("dspylite.jobs.demo_job:DemoConfig")))
def demo(
    args: Optional[list[str]] = typer.Argument(
        None,
        metavar="[CONFIG] [KEY=VALUE]...",
        help="An optional YAML config (configs/demo.yaml), then overrides such as model=/path/to/ckpt.",
    ),
) -> None:
    """The main job: baseline vs prompt-only, SFT, GRPO, SFT+GRPO and BetterTogether, in one table and chart.

    One two-module program on the built-in task, every stage scored on dev and test with 95% intervals.

    Builds the tiny model and starts vLLM unless model= / api_base= say otherwise; about 23 minutes on
    a 2-core CPU (stages=[...] picks fewer, or adds prompt_grpo: GRPO on the prompt-optimized program,
    mmGRPO's order). Rerunning with the same run_dir resumes after the last finished stage.

    Example: dspylite demo configs/demo.yaml model=/path/to/checkpoint
    """
    from dspylite.jobs.demo_job import run_demo

    config, items = _leading_positional(args)
    run_dir = _run_job(run_demo, config, items, say=_say)
    typer.echo(f"report: {Path(run_dir) / 'report.md'}")


# ---- report ---------------------------------------------------------------------------------------


@app.command(no_args_is_help=True, cls=_with_config_keys(None))
def report(
    run_dir: Path = typer.Argument(..., help="A run directory written by a dspylite job, e.g. runs/eval."),
) -> None:
    """Re-render RUN_DIR's report.md and report.png from the files its job left there.

    Reads job.json, metrics.jsonl, stages.json and results.jsonl: use it after a crash, after the
    job, or after new code.

    Runs of eval, optimize and better-together get their full report; other runs a table and a plot
    of their metrics.

    Example: dspylite report runs/optimize
    """
    from dspylite.jobs.report_job import render_report

    path = _run_job(render_report, run_dir)
    typer.echo(f"report: {path}")


# ---- doctor ---------------------------------------------------------------------------------------


@app.command(cls=_with_config_keys(_serve_config(server_only=True)))
def doctor(
    args: Optional[list[str]] = typer.Argument(
        None,
        metavar="[MODEL] [KEY=VALUE]...",
        help="A checkpoint directory or named model source (e.g. tiny) to size (omit to skip), then server "
        "keys such as server.max_lora_rank=32 server.dtype=bfloat16.",
    ),
    config: Optional[Path] = typer.Option(
        None,
        "--config",
        "-c",
        help="A serve or job config whose model and server: section to check (other sections are not read).",
    ),
    batch_size: Optional[int] = typer.Option(
        None, help="Training micro-batch (sequences) to size training for [default: the memory split's, 8]."
    ),
    seq_len: Optional[int] = typer.Option(
        None,
        help="Training sequence length (tokens) to size training for [default: the memory split's, 1024].",
    ),
    vllm_args: bool = typer.Option(
        True, "--vllm-args/--no-vllm-args", help="Run vLLM's own argument check on the server command (slow)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
    # The flags before the server schema: each still works, with a warning naming its key.
    lora_rank: Optional[int] = typer.Option(None, hidden=True),
    max_loras: Optional[int] = typer.Option(None, hidden=True),
) -> None:
    """Check this machine: package versions against the tested set, devices and free memory, bf16,
    whether vLLM accepts the server command a job (or `dspylite serve`) would run, and (with MODEL)
    whether the model fits.

    The server keys are the ones every job's server: section and `dspylite serve` take. Each problem is
    one line with its fix; the exit code is 2 when any check failed.

    Example: dspylite doctor smollm2-135m-instruct server.max_lora_rank=32
    """
    import json

    from dspylite.config_io import split_override
    from dspylite.errors import DSPyLiteError
    from serving.doctor import Environment, as_dicts, diagnose, format_findings
    from serving.launch import server_model
    from serving.memory import TRAINING_BATCH_SIZE, TRAINING_SEQ_LEN
    from serving.serve import load_serve_config

    model, items = _leading_positional(args)
    overrides: dict[str, object] = {}
    for flag, key, value in (
        ("--lora-rank", "server.max_lora_rank", lora_rank),
        ("--max-loras", "server.max_loras", max_loras),
    ):
        if value is not None:
            _warn(f"{flag} is deprecated; use {key}={value}")
            overrides[key] = value
    try:
        overrides.update(split_override(item) for item in items)
        cfg = load_serve_config(config, overrides, model=model, server_only=True)
        model_dir = server_model(cfg.model, cfg.server, _say) if cfg.model else None
    except DSPyLiteError as exc:
        _fail(str(exc))
    findings = diagnose(
        Environment.detect(check_vllm_args=vllm_args),
        model_dir=model_dir,
        server=cfg.server,
        batch_size=batch_size or TRAINING_BATCH_SIZE,
        seq_len=seq_len or TRAINING_SEQ_LEN,
    )
    typer.echo(json.dumps(as_dicts(findings), indent=2) if as_json else format_findings(findings))
    if any(f.status == "error" for f in findings):
        raise typer.Exit(code=ERROR_EXIT_CODE)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
