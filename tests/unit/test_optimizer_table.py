"""The one optimizer table: every optimizer name resolves through every public path to the same class,
the jobs' ``optimizer.kind`` builds the table's class, each prompt optimizer's settings live in its own
section (errors name the full key), old flat keys keep working with a warning naming the new key,
and every prompt optimizer opens its compile the same way."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

import dspylite
from dspylite.config_io import load_config
from dspylite.errors import ConfigError, OptimizerError
from dspylite.optimizers.table import OPTIMIZERS, PROMPT_OPTIMIZERS

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
NAMES = [spec.name for spec in OPTIMIZERS]
KINDS = list(PROMPT_OPTIMIZERS)
# A GEPA config needs one budget; the shipped file's gepa.auto=light is one.
KIND_OVERRIDES = {kind: [f"optimizer.kind={kind}"] for kind in KINDS}


def _metric(example, prediction, trace=None):
    return 1.0


def _task_lm():
    from dspylite.lm import LM

    return LM("tiny", api_base="http://127.0.0.1:9/v1", temperature=0.0, max_tokens=32)


def _optimize_config(overrides):
    from dspylite.jobs.optimize_job import OptimizeJobConfig

    return load_config(OptimizeJobConfig, CONFIGS / "optimize.yaml", overrides)


def _build(settings, run_dir="unused"):
    from dspylite.jobs.session import build_prompt_optimizer

    return build_prompt_optimizer(settings, _metric, run_dir, 2, lm=_task_lm())


# ---- the table and the public paths ------------------------------------------------------------------


def test_the_teleprompt_gepa_is_dspylite_gepa():
    import dspylite.teleprompt as teleprompt

    assert teleprompt.GEPA is dspylite.GEPA


def test_the_table_names_each_optimizer_once_and_says_where_it_lives():
    assert len(NAMES) == len(set(NAMES)) == 8
    assert KINDS == ["labeled", "bootstrap", "random_search", "mipro", "gepa"]
    for spec in OPTIMIZERS:
        cls = spec.load()
        assert (cls.__name__, cls.__module__) == (spec.name, spec.module)


@pytest.mark.parametrize("name", NAMES)
def test_every_optimizer_name_resolves_through_every_public_path(name):
    import dspylite.optimizers
    import dspylite.teleprompt

    cls = next(spec for spec in OPTIMIZERS if spec.name == name).load()
    namespace: dict = {}
    exec(f"from dspylite.teleprompt import {name}", namespace)  # the DSPy spelling, as users write it
    assert getattr(dspylite, name) is cls
    assert getattr(dspylite.optimizers, name) is cls
    assert getattr(dspylite.teleprompt, name) is cls
    assert namespace[name] is cls
    for module in (dspylite, dspylite.optimizers, dspylite.teleprompt):
        assert name in module.__all__ and name in dir(module)


@pytest.mark.parametrize("kind", KINDS)
def test_every_optimizer_kind_of_the_job_builds_the_tables_class(kind, tmp_path):
    spec = PROMPT_OPTIMIZERS[kind]
    cfg = _optimize_config(KIND_OVERRIDES[kind])
    assert cfg.optimizer.spec is spec
    optimizer = _build(cfg.optimizer, tmp_path)
    assert type(optimizer) is spec.load() is getattr(dspylite, spec.name)


def test_an_unknown_name_or_kind_is_refused_naming_the_known_ones():
    import dspylite.optimizers
    import dspylite.teleprompt

    for module in (dspylite.optimizers, dspylite.teleprompt):
        with pytest.raises(AttributeError, match="NoSuchOptimizer"):
            module.NoSuchOptimizer  # noqa: B018
    with pytest.raises(
        ConfigError, match=r"optimizer\.kind must be one of \['labeled', .*'gepa'\], got 'grpo'"
    ):
        _optimize_config(["optimizer.kind=grpo"])


def test_the_jobs_settings_have_one_section_per_table_row_with_settings():
    import dataclasses
    import typing

    from dspylite.jobs.settings import PromptOptimizerSettings

    hints = typing.get_type_hints(PromptOptimizerSettings)
    sections = {
        f.name for f in dataclasses.fields(PromptOptimizerSettings) if dataclasses.is_dataclass(hints[f.name])
    }
    with_settings = {spec.kind: spec.settings_class() for spec in PROMPT_OPTIMIZERS.values() if spec.settings}
    assert sections == set(with_settings) == {"labeled", "random_search", "mipro", "gepa"}
    for kind, cls in with_settings.items():
        assert hints[kind] is cls


def test_only_gepa_is_given_the_tasks_feedback_metric():
    assert [spec.kind for spec in OPTIMIZERS if spec.learns_from_feedback] == ["gepa"]


# ---- settings sections ---------------------------------------------------------------------------------


def test_each_optimizer_gets_its_sections_values_and_the_shared_ones(tmp_path):
    cfg = _optimize_config(
        [
            "optimizer.seed=7",
            "optimizer.max_lm_calls=50",
            "optimizer.max_bootstrapped_demos=3",
            "optimizer.labeled.k=5",
            "optimizer.random_search.num_candidate_programs=2",
            "optimizer.mipro.auto=none",
            "optimizer.mipro.num_candidates=3",
            "optimizer.mipro.num_trials=4",
            "optimizer.gepa.auto=none",
            "optimizer.gepa.max_metric_calls=60",
        ]
    ).optimizer
    built = {}
    for kind in KINDS:
        cfg.kind = kind
        built[kind] = _build(cfg, tmp_path / kind)
        assert (built[kind].seed, built[kind].max_lm_calls) == (7, 50)
    assert built["labeled"].k == 5
    assert built["bootstrap"].max_bootstrapped_demos == 3
    assert (built["random_search"].num_candidate_programs, built["random_search"].max_bootstrapped_demos) == (
        2,
        3,
    )
    assert (built["mipro"].auto, built["mipro"].num_candidates, built["mipro"].num_trials) == (None, 3, 4)
    assert (built["gepa"].auto, built["gepa"].max_metric_calls) == (None, 60)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.labeled.k=0"], r"optimizer\.labeled\.k must be > 0, got 0"),
        (
            ["optimizer.random_search.num_candidate_programs=-1"],
            r"optimizer\.random_search\.num_candidate_programs",
        ),
        (
            ["optimizer.kind=mipro", "optimizer.mipro.auto=none"],
            r"optimizer\.mipro\.auto=none needs optimizer\.mipro\.num_candidates and optimizer\.mipro\.num_trials",
        ),
        (
            ["optimizer.kind=gepa", "optimizer.gepa.auto=none"],
            r"exactly one budget: optimizer\.gepa\.auto=light\|medium\|heavy, or optimizer\.gepa\.auto=none with "
            r"optimizer\.gepa\.max_metric_calls=N",
        ),
        (["optimizer.max_lm_calls=0"], r"optimizer\.max_lm_calls must be > 0"),
        (["optimizer.mipro.minibatch_size=0"], r"optimizer\.mipro\.minibatch_size"),
    ],
)
def test_section_errors_name_the_full_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        _optimize_config(overrides)


def test_a_sections_key_is_named_from_where_the_section_sits():
    from dspylite.jobs.demo_job import DemoConfig

    with pytest.raises(ConfigError, match=r"prompt\.labeled\.k must be > 0"):
        load_config(DemoConfig, CONFIGS / "demo.yaml", ["prompt.labeled.k=0"])


def test_budget_rules_apply_only_to_the_optimizer_that_runs():
    cfg = _optimize_config(
        ["optimizer.kind=bootstrap", "optimizer.mipro.auto=none", "optimizer.gepa.auto=none"]
    )
    assert cfg.optimizer.kind == "bootstrap"


# ---- renamed keys ------------------------------------------------------------------------------------


OLD_KEYS = {
    "k": ("labeled.k", 3),
    "num_candidate_programs": ("random_search.num_candidate_programs", 2),
    "num_candidates": ("mipro.num_candidates", 5),
    "num_trials": ("mipro.num_trials", 6),
    "minibatch": ("mipro.minibatch", False),
    "minibatch_size": ("mipro.minibatch_size", 9),
    "max_metric_calls": ("gepa.max_metric_calls", 70),
    "reflection_minibatch_size": ("gepa.reflection_minibatch_size", 2),
    "candidate_selection_strategy": ("gepa.candidate_selection_strategy", "current_best"),
    "use_merge": ("gepa.use_merge", False),
    "reflection_model": ("gepa.reflection_model", "big"),
    "reflection_api_base": ("gepa.reflection_api_base", "http://10.0.0.9:8000/v1"),
    "reflection_temperature": ("gepa.reflection_temperature", 0.5),
    "reflection_max_tokens": ("gepa.reflection_max_tokens", 300),
}


def _value(settings, dotted):
    for part in dotted.split("."):
        settings = getattr(settings, part)
    return settings


@pytest.mark.parametrize("old", sorted(OLD_KEYS))
@pytest.mark.parametrize("given_as", ["file", "override"])
def test_an_old_flat_key_still_works_with_a_warning_naming_its_new_key(old, given_as, caplog):
    from dspylite.jobs.optimize_job import OptimizeJobConfig

    new, value = OLD_KEYS[old]
    with caplog.at_level(logging.WARNING, logger="dspylite.config_io"):
        if given_as == "file":
            cfg = load_config(OptimizeJobConfig, {"optimizer": {old: value}})
        else:  # on top of the shipped file, which sets the new key: the override still wins
            cfg = load_config(OptimizeJobConfig, CONFIGS / "optimize.yaml", [f"optimizer.{old}={value}"])
    assert _value(cfg.optimizer, new) == value
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"optimizer.{old} is now optimizer.{new}" in w for w in warnings), warnings


def test_the_old_auto_key_sets_the_budget_preset_of_mipro_and_gepa(caplog):
    from dspylite.jobs.optimize_job import OptimizeJobConfig

    with caplog.at_level(logging.WARNING, logger="dspylite.config_io"):
        cfg = load_config(
            OptimizeJobConfig,
            {"optimizer": {"kind": "gepa", "auto": "none", "max_metric_calls": 150}},
        )
    assert (cfg.optimizer.mipro.auto, cfg.optimizer.gepa.auto, cfg.optimizer.gepa.max_metric_calls) == (
        "none",
        "none",
        150,
    )
    assert any("optimizer.mipro.auto and optimizer.gepa.auto" in r.getMessage() for r in caplog.records)


def test_an_old_key_next_to_its_new_one_is_refused_naming_both():
    from dspylite.jobs.optimize_job import OptimizeJobConfig

    with pytest.raises(ConfigError, match=r"optimizer\.k is the old name of optimizer\.labeled\.k"):
        load_config(OptimizeJobConfig, {"optimizer": {"k": 2, "labeled": {"k": 3}}})


# ---- the shared compile opening ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_every_prompt_optimizer_opens_its_compile_the_same_way(kind, tmp_path):
    from dspylite.optimizers._compile import PromptOptimizer

    cfg = _optimize_config(KIND_OVERRIDES[kind])
    optimizer = _build(cfg.optimizer, tmp_path / "run")
    assert isinstance(optimizer, PromptOptimizer) and isinstance(optimizer, dspylite.Teleprompter)
    example = dspylite.Example(question="q", answer="a").with_inputs("question")
    with pytest.raises(OptimizerError, match="trainset is empty"):
        optimizer.compile(dspylite.Predict("question -> answer"), trainset=[])
    with pytest.raises(OptimizerError, match=r"valset\[0\] is a str"):
        optimizer.compile(dspylite.Predict("question -> answer"), trainset=[example], valset=["x"])
    with pytest.raises(OptimizerError, match="has no predictors"):
        optimizer.compile(dspylite.Module(), trainset=[example, example])
    assert not (tmp_path / "run").exists()  # nothing is written before the inputs are checked


def test_the_public_paths_import_no_optimizer_until_a_name_is_used():
    code = (
        "import sys, dspylite, dspylite.optimizers, dspylite.teleprompt\n"
        "names = dspylite.__all__ + dspylite.optimizers.__all__ + dspylite.teleprompt.__all__\n"
        "from dspylite.optimizers.table import OPTIMIZERS\n"
        "print(sorted(s.module for s in OPTIMIZERS if s.module in sys.modules))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
