"""No job overwrites a key its ``--help`` lists (issue 22: ``grpo.model_path`` and ``grpo.run_dir`` were
listed, then replaced by the job, so a user who set them was silently ignored).

For every command whose ``--help`` lists config keys, and for ``python -m finetune.train --help``, the
keys are walked with ``config_keys`` (the walker ``--help`` prints) and each gets a distinctive
non-default value where one is possible (a few keys are pinned, each with its reason, in ``PINNED``).
The job then runs against the fake vLLM with stub trainers (no training) and the test fails on:

1. a key whose value the job changed in its own config (``cfg.grpo.model_path = ...``);
2. a trainer section (``FinetuneConfig``, ``GRPOConfig``) that reaches no trainer unchanged: the config
   ``train_lora`` or ``GRPOTrainer`` receives must equal the section, field by field (a library that
   copies the section and sets a field is caught here);
3. a ``bootstrap`` key that does not reach BootstrapFinetune under its own name, an ``lm`` or ``server``
   key whose namesake on the job's LM or server handle differs, or trainers that train another base model
   or write outside the job's ``run_dir`` than the job's ``model`` and ``run_dir`` say.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
import types
import typing
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fake_vllm_server import FakeVLLM
from serving_helpers import make_adapter
from typer.testing import CliRunner

from dspylite.config_io import config_keys, load_config, to_dict
from dspylite.jobs.report_job import DEMO_STAGES
from finetune.config import FinetuneConfig
from rl.config import GRPOConfig

SERVED_NAME = "tiny"
SIZES = {"task.n_train": 8, "task.n_dev": 6, "task.n_test": 6}

# Keys left at their defaults, with the reason. Everything else gets a distinctive value.
PINNED = {
    "task.name": "the fake server answers the built-in fact_qa task",
    "task.program": "custom-task keys apply to task.name=custom only",
    "task.metric": "custom-task keys apply to task.name=custom only",
    "task.dataset": "custom-task keys apply to task.name=custom only",
    "task.dev_dataset": "custom-task keys apply to task.name=custom only",
    "task.test_dataset": "custom-task keys apply to task.name=custom only",
    "task.inputs": "custom-task keys apply to task.name=custom only",
    "task.dev_fraction": "custom-task keys apply to task.name=custom only",
    "task.test_fraction": "custom-task keys apply to task.name=custom only",
    "task.python_path": "custom-task keys apply to task.name=custom only",
    "lm.adapter": "the fake server answers in ChatAdapter's markers",
    "stages": "set to every demo stage (prompt_grpo is opt-in): each must run for its trainers to be built",
    "weights": "set per run: better-together runs once with each weight optimizer",
    "server.replicas": "above 1 it starts servers here, which server.api_base (the fake server) excludes",
    "server.data_parallel_size": "above 1 it is refused (runtime LoRA loading reaches one DP replica)",
}
# Command names whose --help lists config keys but that are no job of dspylite.jobs.
NOT_JOBS = {
    "serve": "starts and holds a vLLM process for other clients; it builds no optimizer or trainer",
    "doctor": "reads only `model` and `server` to check the machine; it runs nothing",
}
# Leaf names whose generic distinctive value would make the job do nothing to check.
VALUES_BY_LEAF: dict[str, list[Any]] = {
    "metric_threshold": [0.75],  # above 1 no run passes, and no trainer is built
    "kind": ["labeled", "random_search", "mipro", "gepa"],  # optimizer.kind: a row of the optimizer table
    "target_modules": [["q_proj", "v_proj"]],
    "train_predictors": [["answer"]],
    "balance_field": ["answer"],  # an output field of the fact_qa program (a made-up name is refused)
}


# ---- the jobs ------------------------------------------------------------------------------------------


@dataclass
class Job:
    config_class: str  # "module:Class", as the CLI's --help names it
    run: Callable[[list[str]], Any]
    trained: tuple[str, ...] = ()  # trainer sections a trainer must have received
    fixed: dict[str, Any] = field(default_factory=dict)  # values of pinned keys for this run


def _run_eval(overrides: list[str]) -> Any:
    from dspylite.jobs.eval_job import run_eval_job

    return run_eval_job(None, overrides)


def _run_optimize(overrides: list[str]) -> Any:
    from dspylite.jobs.optimize_job import run_optimize_job

    return run_optimize_job(None, overrides)


def _run_finetune(overrides: list[str]) -> Any:
    from dspylite.jobs.finetune_job import run_finetune_job

    return run_finetune_job(None, overrides)


def _run_grpo(overrides: list[str]) -> Any:
    from dspylite.jobs.grpo_job import run_grpo_job

    return run_grpo_job(None, overrides, display_progress=False)


def _run_better_together(overrides: list[str]) -> Any:
    from dspylite.jobs.better_together_job import run_better_together_job

    return run_better_together_job(None, overrides)


def _run_demo(overrides: list[str]) -> Any:
    from dspylite.jobs.demo_job import run_demo

    return run_demo(None, overrides)


def _run_sft_train(overrides: list[str]) -> Any:
    from finetune.train import run

    return run(None, overrides)


JOBS: dict[str, list[Job]] = {
    "eval": [Job("dspylite.jobs.eval_job:EvalJobConfig", _run_eval)],
    "optimize": [Job("dspylite.jobs.optimize_job:OptimizeJobConfig", _run_optimize)],
    "finetune": [Job("dspylite.jobs.finetune_job:FinetuneJobConfig", _run_finetune, trained=("sft",))],
    "grpo": [Job("dspylite.jobs.grpo_job:GRPOJobConfig", _run_grpo, trained=("grpo",))],
    "better-together": [
        Job(
            "dspylite.jobs.better_together_job:BetterTogetherJobConfig",
            _run_better_together,
            trained=("sft",),
            fixed={"weights": "finetune"},
        ),
        Job(
            "dspylite.jobs.better_together_job:BetterTogetherJobConfig",
            _run_better_together,
            trained=("grpo",),
            fixed={"weights": "grpo"},
        ),
    ],
    "demo": [
        Job(
            "dspylite.jobs.demo_job:DemoConfig", _run_demo, trained=("sft", "grpo", "sft_grpo", "prompt_grpo")
        )
    ],
    # python -m finetune.train --help (the accelerate entry point)
    "finetune.train": [Job("finetune.train:SFTTrainJobConfig", _run_sft_train, trained=("sft",))],
}


def _config_class(path: str) -> type:
    from dspylite.jobs.tasks import load_object

    return load_object(path, (), "config class")


# ---- distinctive values --------------------------------------------------------------------------------


def leaf_types(cls: type, prefix: str = "") -> dict[str, Any]:
    """key -> annotation of every leaf ``config_keys`` walks (same order, same keys)."""
    hints = typing.get_type_hints(cls)
    types_: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if dataclasses.is_dataclass(hints.get(f.name)):
            types_.update(leaf_types(hints[f.name], f"{prefix}{f.name}."))
        else:
            types_[f"{prefix}{f.name}"] = hints[f.name]
    return types_


def candidates(key: str, default: Any, annotation: Any) -> Iterator[Any]:
    """Distinctive values for ``key``, most distinctive first; the offset differs per key, so two
    sections of one type (grpo, sft_grpo) get different values."""
    leaf = key.rsplit(".", 1)[-1]
    offset = 1 + zlib.crc32(key.encode()) % 7
    slug = key.replace(".", "-").replace("_", "-")
    yield from VALUES_BY_LEAF.get(leaf, [])
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in args if a is not type(None))
        args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if annotation is bool:
        yield not default
    elif origin is typing.Literal:
        yield from (choice for choice in args if choice != default)
    elif annotation is int:
        if default is None:
            yield 1000 + offset
        else:
            yield from (default + offset, default + 1, default - 1, 2 * default)
    elif annotation is float:
        if default is None:
            yield 0.5
        else:
            yield from (round(default * 1.5 + 0.01 * offset, 6), round(default * 0.5 + 0.001 * offset, 6))
    elif annotation is str:
        yield from (f"x-{slug}", "cpu", "constant", "w -> p")
    elif origin is list:
        yield [f"x-{slug}"]
        if default:
            yield default[:1]


def _serialized(value: Any) -> str:
    return json.dumps(value)  # JSON is YAML: key=value overrides parse it back to the same value


def distinctive_values(cls: type, harness: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """harness and fixed values, then for every other key the first distinctive value the config accepts
    together with the values chosen before it."""
    values = {**harness, **fixed}
    kinds = leaf_types(cls)
    for key, default, _help in config_keys(cls):
        if key in values or key in PINNED:
            continue
        for candidate in candidates(key, default, kinds[key]):
            if candidate == default:
                continue
            try:
                load_config(
                    cls, None, [f"{k}={_serialized(v)}" for k, v in {**values, key: candidate}.items()]
                )
            except Exception:  # noqa: BLE001 - the config refused this value; try the next one
                continue
            values[key] = candidate
            break
    return values


# ---- what the job built --------------------------------------------------------------------------------


@dataclass
class Seen:
    """What the stubs saw while a job ran."""

    configs: list[Any] = field(default_factory=list)  # every job config load_config returned (+ snapshot)
    sft: list[dict[str, Any]] = field(default_factory=list)  # train_lora calls
    grpo: list[Any] = field(default_factory=list)  # GRPOTrainers whose fit ran
    bootstrap: list[Any] = field(default_factory=list)  # BootstrapFinetune objects that compiled
    backends: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def install_stubs(monkeypatch: pytest.MonkeyPatch, seen: Seen) -> None:
    import dspylite.config_io
    import finetune.data
    import finetune.sft
    from dspylite.optimizers.bootstrap_finetune import BootstrapFinetune
    from finetune.sft import AdapterResult
    from rl.trainer import GRPOResult, GRPOTrainer, ValPoint
    from serving.backend import Backend

    real_load = dspylite.config_io.load_config

    def recording_load(cls, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        cfg = real_load(cls, *args, **kwargs)
        seen.configs.append((cfg, copy.deepcopy(to_dict(cfg))))
        return cfg

    for module in (
        "dspylite.jobs.eval_job",
        "dspylite.jobs.optimize_job",
        "dspylite.jobs.finetune_job",
        "dspylite.jobs.grpo_job",
        "dspylite.jobs.better_together_job",
        "dspylite.jobs.demo_job",
        "finetune.train",
    ):
        monkeypatch.setattr(f"{module}.load_config", recording_load)

    def train_lora(data, cfg, run_dir, *, adapter_name=None, model_path=None, serving_dtype=None, **_):  # noqa: ANN001, ANN202
        from dspylite.run_dir import RunDir

        run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        name = adapter_name or "sft-1"
        with seen.lock:
            seen.sft.append({"cfg": cfg, "model_path": model_path, "run": run.path, "name": name})
        path = make_adapter(run.adapters_dir / name, rank=cfg.lora.r, base_model=str(model_path))
        return AdapterResult(name, str(path), str(model_path), data.data_hash, {"train_loss": 0.5})

    def fit(self, program, trainset, valset, testset=None):  # noqa: ANN001, ANN202
        seen.grpo.append(self)
        start = ValPoint(0, self.server.model_name, 0.0, 0.0, 0.0)
        return GRPOResult(program.deepcopy(), start.version, None, start, start, start, [start], self.run)

    real_compile = BootstrapFinetune.compile

    def compile_recorded(self, student, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen.bootstrap.append(self)
        return real_compile(self, student, **kwargs)

    real_backend_init = Backend.__init__

    def backend_recorded(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        real_backend_init(self, *args, **kwargs)
        seen.backends.append(self)

    # The fake base model has no tokenizer; length checks are tested in test_sft_data.py.
    real_build = finetune.data.build_sft_data
    monkeypatch.setattr(
        finetune.data, "build_sft_data", lambda runs, **kw: real_build(runs, **{**kw, "tokenizer": None})
    )
    monkeypatch.setattr(finetune.sft, "train_lora", train_lora)
    monkeypatch.setattr(GRPOTrainer, "fit", fit)
    monkeypatch.setattr(BootstrapFinetune, "compile", compile_recorded)
    monkeypatch.setattr(Backend, "__init__", backend_recorded)


def fact_qa_replies(values: dict[str, Any]) -> Callable[[dict[str, Any]], str]:
    """Fact QA answers for the task these values load: the fact always; the answer right through an
    adapter, on every other example through the base model, and alternately when sampled."""
    from dspylite.datasets import load_fact_qa

    splits = load_fact_qa(
        seed=values.get("task.seed", 0),
        n_train=values["task.n_train"],
        n_dev=values["task.n_dev"],
        n_test=values["task.n_test"],
    )
    examples = [ex for split in splits.values() for ex in split]
    sampled: dict[str, int] = {}
    lock = threading.Lock()

    def reply(body: dict[str, Any]) -> str:
        last = body["messages"][-1]["content"]
        for index, ex in enumerate(examples):
            if "[[ ## context ## ]]" in last and ex.context in last and ex.question in last:
                return f"[[ ## fact ## ]]\n{ex.fact}\n\n[[ ## completed ## ]]"
            if "[[ ## fact ## ]]" in last and ex.fact in last and ex.question in last:
                if (body.get("temperature") or 0) > 0:
                    with lock:
                        sampled[last] = sampled.get(last, 0) + 1
                        right = sampled[last] % 2 == 1
                else:
                    right = body["model"] != SERVED_NAME or index % 2 == 0
                return f"[[ ## answer ## ]]\n{ex.answer if right else 'unknown'}\n\n[[ ## completed ## ]]"
        return "no markers here"

    return reply


# ---- the checks ----------------------------------------------------------------------------------------


def _dotted(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value) and key != "adapters":
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def overwritten_keys(job: Job, values: dict[str, Any], seen: Seen) -> list[str]:
    """Every way a key's value failed to reach what the job built (empty: none)."""
    problems: list[str] = []
    cls = _config_class(job.config_class)
    [(cfg, loaded)] = [(c, d) for c, d in seen.configs if isinstance(c, cls)]
    given = _dotted(loaded)
    for key, value in values.items():
        if given.get(key) != value and not isinstance(value, dict):
            problems.append(f"{key}: set to {value!r}, the loaded config holds {given.get(key)!r}")
    # 1. nothing the job changed in its own config
    now = _dotted(to_dict(cfg))
    problems += [
        f"{k}: the job changed it from {given[k]!r} to {now.get(k)!r}"
        for k in given
        if now.get(k) != given[k]
    ]
    # 2. every trainer section reached a trainer whole
    received = {
        FinetuneConfig: [call["cfg"] for call in seen.sft],
        GRPOConfig: [trainer.cfg for trainer in seen.grpo],
    }
    for section in job.trained:
        wanted = getattr(cfg, section)
        got = received[type(wanted)]
        if not got:
            problems.append(f"{section}: no trainer received a {type(wanted).__name__}")
        elif wanted not in got:
            nearest = min(got, key=lambda c: len(_diff(wanted, c)))
            problems += [f"{section}.{k}: the trainer got {v!r}" for k, v in _diff(wanted, nearest).items()]
    # 3. sections read by name on the objects built from them; the job's model and run directory
    bootstrap = getattr(cfg, "bootstrap", None) if "sft" in job.trained and seen.bootstrap else None
    if bootstrap is not None:
        for f in dataclasses.fields(bootstrap):
            wanted = getattr(bootstrap, f.name)
            got = [_attr(opt, f.name) for opt in seen.bootstrap]
            if any(g is _MISSING for g in got) or any(g != wanted for g in got):
                problems.append(f"bootstrap.{f.name}: set to {wanted!r}, BootstrapFinetune has {got!r}")
    for section, objects in (
        ("lm", [b.base_lm for b in seen.backends if b.base_lm is not None]),
        ("server", [b.server for b in seen.backends]),
    ):
        settings = getattr(cfg, section, None)
        for f in dataclasses.fields(settings) if settings is not None else ():
            wanted = getattr(settings, f.name)
            for obj in objects:
                got = getattr(obj, f.name, _MISSING)
                if got is not _MISSING and not callable(got) and got != wanted:
                    problems.append(
                        f"{section}.{f.name}: set to {wanted!r}, the job's {type(obj).__name__} has {got!r}"
                    )
    if "adapter_name" in values:
        problems += [
            f"adapter_name: set to {values['adapter_name']!r}, SFT named it {c['name']!r}"
            for c in seen.sft
            if c["name"] != values["adapter_name"]
        ]
    model = Path(values["model"]).resolve()
    run_dir = Path(values["run_dir"]).resolve()
    for call in seen.sft:
        if Path(call["model_path"]).resolve() != model:
            problems.append(f"model: set to {model}, SFT trained {call['model_path']}")
        if not Path(call["run"]).resolve().is_relative_to(run_dir):
            problems.append(f"run_dir: set to {run_dir}, SFT wrote to {call['run']}")
    for trainer in seen.grpo:
        if Path(trainer.backend.model_dir).resolve() != model:
            problems.append(f"model: set to {model}, GRPO trains {trainer.backend.model_dir}")
        if not trainer.run.path.resolve().is_relative_to(run_dir):
            problems.append(f"run_dir: set to {run_dir}, GRPO wrote to {trainer.run.path}")
    return problems


_MISSING = object()


def _attr(optimizer: Any, name: str) -> Any:
    """``name`` on BootstrapFinetune or its config (the job section's sample_seed -1 means None)."""
    for holder in (optimizer.config, optimizer):
        if hasattr(holder, name):
            value = getattr(holder, name)
            return -1 if name == "sample_seed" and value is None else value
    return _MISSING


def _diff(wanted: Any, got: Any) -> dict[str, Any]:
    a, b = _dotted(to_dict(wanted)), _dotted(to_dict(got))
    return {k: b.get(k) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


# ---- the tests -----------------------------------------------------------------------------------------


def test_every_command_with_config_keys_is_walked_and_lists_the_same_keys() -> None:
    import typer.main

    from dspylite.cli import app

    runner = CliRunner()
    with_keys = set()
    for name in typer.main.get_command(app).commands:
        result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "400"}, terminal_width=400)
        assert result.exit_code == 0, result.output
        if "Config keys" not in result.output:
            continue
        with_keys.add(name)
        if name in NOT_JOBS:
            continue
        for key, _default, _help in config_keys(_config_class(JOBS[name][0].config_class)):
            assert f"{key} = " in result.output, f"dspylite {name} --help does not list {key}"
    assert with_keys - set(NOT_JOBS) == set(JOBS) - {"finetune.train"}


def harness_values(job: Job, tmp_path: Path, base_dir: Path, api_base: str) -> dict[str, Any]:
    """The values the fake server and the stubs need; each differs from its default too."""
    from sft_helpers import qa_runs

    from dspylite.datasets.programs import FactQA
    from finetune.data import build_sft_data

    keys = {key for key, _, _ in config_keys(_config_class(job.config_class))}
    program_path = FactQA().save(tmp_path / "start" / "program.json")
    data_dir = tmp_path / "sft-data"
    build_sft_data(qa_runs(8), val_fraction=0.0).save(data_dir)
    wanted = {
        "run_dir": str(tmp_path / "run"),
        "model": str(base_dir),
        "program_path": str(program_path),
        "data": str(data_dir),
        "server.api_base": api_base,
        "server.adapters": {"x-extra": str(make_adapter(tmp_path / "extra", base_model=str(base_dir)))},
        **SIZES,
        "selection_size": 4,
        "grpo_valset_size": 4,
        "stages": list(DEMO_STAGES),
        "grpo.init_adapter": str(make_adapter(tmp_path / "start-a", base_model=str(base_dir))),
        "sft_grpo.init_adapter": str(make_adapter(tmp_path / "start-b", base_model=str(base_dir))),
        "prompt_grpo.init_adapter": str(make_adapter(tmp_path / "start-c", base_model=str(base_dir))),
    }
    return {k: v for k, v in wanted.items() if k in keys}


CASES = [(name, i) for name, jobs in JOBS.items() for i in range(len(jobs))]


@pytest.mark.parametrize(("name", "index"), CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_no_job_overwrites_a_key_it_lists(
    name: str, index: int, tmp_path: Path, base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = JOBS[name][index]
    cls = _config_class(job.config_class)
    seen = Seen()
    install_stubs(monkeypatch, seen)
    with FakeVLLM(str(base_dir), served_model_name=SERVED_NAME) as server:
        values = distinctive_values(cls, harness_values(job, tmp_path, base_dir, server.api_base), job.fixed)
        defaults = {key: default for key, default, _ in config_keys(cls)}
        server.reply_fn = fact_qa_replies({**defaults, **SIZES, **values})
        unset = sorted(k for k, default, _ in config_keys(cls) if k not in values and k not in PINNED)
        assert unset == [], f"no distinctive value was found for {unset}"
        job.run([f"{k}={_serialized(v)}" for k, v in values.items()])
    assert overwritten_keys(job, values, seen) == []
