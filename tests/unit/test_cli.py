"""The ``dspylite`` CLI: help texts list config keys, bad input exits 2 with one red line, and the
eval / optimize / better-together / report commands write their run directories (against the fake
OpenAI server, no vLLM)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fake_vllm_server import FakeVLLM
from typer.testing import CliRunner

from dspylite.cli import app
from dspylite.datasets import load_fact_qa
from dspylite.datasets.programs import FactQA
from dspylite.optimizers.weights import WeightOptimizer

runner = CliRunner()
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SMALL = ["task.n_train=8", "task.n_dev=6", "task.n_test=10", "lm.num_threads=2"]

HELP_KEYS = {
    "eval": [
        "program_path",
        "split",
        "task.n_test",
        "task.program",
        "task.inputs",
        "server.api_base",
        "lm.adapter",
    ],
    "optimize": [
        "optimizer.kind",
        "optimizer.max_bootstrapped_demos",
        "optimizer.labeled.k",
        "optimizer.random_search.num_candidate_programs",
        "optimizer.mipro.auto",
        "optimizer.gepa.max_metric_calls",
        "task.n_dev",
    ],
    "better-together": [
        "strategy",
        "weights",
        "prompt.kind",
        "bootstrap.samples_per_example",
        "sft.learning_rate",
        "grpo.num_steps",
    ],
    "demo": [
        "task.n_dev",
        "task.n_test",
        "stages",
        "strategy",
        "server.api_base",
        "sft_grpo.num_steps",
        "prompt.kind",
    ],
    "finetune": ["sft.learning_rate", "sft.lora.r", "task.n_dev", "bootstrap.samples_per_example"],
    "serve": ["max_lora_rank", "extra_args", "adapters"],
    "grpo": ["grpo.num_steps", "reward"],
}
JOB_CONFIGS = {
    "eval": "eval.yaml",
    "optimize": "optimize.yaml",
    "better-together": "better_together.yaml",
    "demo": "demo.yaml",
    "finetune": "sft.yaml",
    "grpo": "grpo.yaml",
}


# ---- help --------------------------------------------------------------------------------------------


def test_top_level_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "eval", "optimize", "finetune", "grpo", "better-together", "demo", "report"):
        assert command in result.output


@pytest.mark.parametrize("command", sorted(HELP_KEYS))
def test_help_explains_the_command_and_lists_its_config_keys(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Config keys" in result.output
    for key in HELP_KEYS[command]:
        assert f"{key} = " in result.output, f"{command} --help does not list {key}"


def test_report_help_names_the_run_directory() -> None:
    result = runner.invoke(app, ["report", "--help"])
    assert result.exit_code == 0
    assert "RUN_DIR" in result.output and "report.md" in result.output


# ---- bad input ---------------------------------------------------------------------------------------


def _single_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


@pytest.mark.parametrize("command", sorted(JOB_CONFIGS))
def test_unknown_override_key_exits_2_naming_it(command: str) -> None:
    result = runner.invoke(app, [command, str(CONFIGS / JOB_CONFIGS[command]), "no_such_key=1"])
    assert result.exit_code == 2, result.output
    assert "no_such_key" in _single_error_line(result.output)


@pytest.mark.parametrize(
    ("override", "key"),
    [("task.n_test=lots", "task.n_test"), ("lm.cache=maybe", "lm.cache"), ("split=validation", "split")],
)
def test_wrongly_typed_override_exits_2_naming_the_key(override: str, key: str) -> None:
    result = runner.invoke(app, ["eval", str(CONFIGS / "eval.yaml"), override])
    assert result.exit_code == 2, result.output
    assert key in _single_error_line(result.output)


def test_nested_unknown_key_is_named_with_its_section() -> None:
    result = runner.invoke(app, ["optimize", str(CONFIGS / "optimize.yaml"), "optimizer.kindd=mipro"])
    assert result.exit_code == 2
    assert "optimizer.kindd" in _single_error_line(result.output)


def test_override_without_equals_sign_exits_2() -> None:
    result = runner.invoke(app, ["eval", str(CONFIGS / "eval.yaml"), "split"])
    assert result.exit_code == 2
    assert "'split'" in _single_error_line(result.output)


@pytest.mark.parametrize("command", ["eval", "optimize", "better-together", "finetune", "grpo"])
def test_missing_config_file_is_named(command: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = runner.invoke(app, [command, str(missing)])
    assert result.exit_code == 2
    assert str(missing) in _single_error_line(result.output)


def test_bad_strategy_is_a_config_error() -> None:
    result = runner.invoke(app, ["better-together", str(CONFIGS / "better_together.yaml"), "strategy=p -> x"])
    assert result.exit_code == 2
    assert "strategy" in _single_error_line(result.output)


def test_custom_task_without_program_names_the_key() -> None:
    result = runner.invoke(app, ["eval", str(CONFIGS / "eval.yaml"), "task.name=custom"])
    assert result.exit_code == 2
    assert "task.program" in _single_error_line(result.output)


def test_eval_of_an_empty_split_exits_2_before_starting_anything() -> None:
    result = runner.invoke(app, ["eval", str(CONFIGS / "eval.yaml"), "split=dev", "task.n_dev=0"])
    assert result.exit_code == 2
    assert "split='dev'" in _single_error_line(result.output)


# ---- demo argument handling --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "config", "overrides"),
    [
        (["configs/demo.yaml", "model=/ckpt"], "configs/demo.yaml", ["model=/ckpt"]),
        (["model=/ckpt", "task.n_dev=50"], None, ["model=/ckpt", "task.n_dev=50"]),
        ([], None, []),
    ],
)
def test_demo_passes_config_and_overrides(
    args: list[str], config: str | None, overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def fake_run_demo(config_path, override_list, say=None):  # noqa: ANN001, ANN202
        calls.append((config_path, list(override_list)))
        return tmp_path

    monkeypatch.setattr("dspylite.jobs.demo_job.run_demo", fake_run_demo)
    result = runner.invoke(app, ["demo", *args])
    assert result.exit_code == 0, result.output
    assert calls == [(config, overrides)]
    assert f"report: {tmp_path / 'report.md'}" in result.output


# ---- report ------------------------------------------------------------------------------------------


def _score(mean: float, n: int, errors: dict | None = None) -> dict:
    scores = [1.0] * round(mean * n) + [0.0] * (n - round(mean * n))
    return {
        "score": 100 * mean,
        "n": n,
        "mean": mean,
        "ci95": [mean - 0.1, min(1.0, mean + 0.1)],
        "errors": errors or {},
        "scores": scores,
    }


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_rerenders_an_eval_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "job.json").write_text(
        json.dumps(
            {
                "kind": "eval",
                "status": "done",
                "task": "fact_qa",
                "program": "FactQA",
                "split": "test",
                "score": _score(0.75, 8, {"parse": 1}),
                "seconds": 1.0,
            }
        )
    )
    (run / "results.jsonl").write_text(
        json.dumps({"id": "ex-1", "score": 1.0, "error_kind": None, "prediction": {"answer": "Oslo"}}) + "\n"
    )
    (run / "metrics.jsonl").write_text(json.dumps({"time": 0, "phase": "eval", "score": 75.0}) + "\n")
    (run / "report.md").write_text("stale")
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    text = (run / "report.md").read_text()
    assert "stale" not in text
    assert "Evaluation: FactQA on fact_qa (test)" in text
    assert "75.0 [65.0, 85.0]" in text and "parse=1" in text and "ex-1" in text
    assert _is_png(run / "report.png")


def test_report_rerenders_an_optimize_run_with_paired_difference(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "optimizer").mkdir(parents=True)
    scores = {"baseline": {"test": _score(0.25, 8)}, "optimized": {"test": _score(0.75, 8)}}
    (run / "job.json").write_text(
        json.dumps(
            {
                "kind": "optimize",
                "status": "done",
                "optimizer": "BootstrapFewShot",
                "task": "fact_qa",
                "scores": scores,
                "demos": {"extract": 2},
                "n_train": 8,
            }
        )
    )
    (run / "optimizer" / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": i, "score": s}) + "\n" for i, s in enumerate([10.0, 40.0, 70.0]))
    )
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    text = (run / "report.md").read_text()
    assert "BootstrapFewShot on fact_qa" in text
    assert "+50.0" in text  # paired difference optimized - baseline, in points
    assert _is_png(run / "report.png")


def test_report_rerenders_a_better_together_run_from_stages_alone(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    stages = [
        {
            "index": 0,
            "name": "baseline",
            "scores": {"val": [1, 0, 0, 0, 0]},
            "program_path": "x",
            "seconds": 1.0,
        },
        {"index": 1, "name": "p", "scores": {"val": [1, 1, 0, 0, 0]}, "program_path": "y", "seconds": 2.0},
        {
            "index": 2,
            "name": "p -> w",
            "scores": {"val": [1, 1, 1, 0, 0]},
            "program_path": "z",
            "adapters": {"bt-w-1-1": "/adapters/bt-w-1-1"},
            "seconds": 30.0,
        },
    ]
    (run / "stages.json").write_text(json.dumps(stages))  # no job.json: a run killed before the end
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    text = (run / "report.md").read_text()
    assert "p -> w" in text and "60.0 [" in text and "bt-w-1-1" in text
    assert "+40.0 [" in text  # p -> w against the baseline, paired over the same five examples
    assert _is_png(run / "report.png")


def test_report_of_another_jobs_run_plots_its_metrics(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"time": 0, "step": s, "phase": "sft", "loss": 2.0 / s} for s in range(1, 6)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = runner.invoke(app, ["--verbose", "report", str(run)])
    assert result.exit_code == 0, result.output
    text = (run / "report.md").read_text()
    assert "| phase | step | loss |" in text and "| sft | 5 | 0.400 |" in text
    assert "metrics per step" not in text  # the plot title is in the PNG, not the markdown
    assert _is_png(run / "report.png")


def test_report_on_a_missing_or_empty_directory_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", str(tmp_path / "absent")])
    assert result.exit_code == 2
    assert "absent" in _single_error_line(result.output)
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a run directory" in _single_error_line(result.output)


# ---- jobs against the fake server ---------------------------------------------------------------------


def _fact_qa_replies(answer_needs_demos: bool = False):  # noqa: ANN202
    """A stub LM that reads the gold fact/answer of the Fact QA example in the prompt.

    With ``answer_needs_demos`` the answer step is right only when the prompt carries demos (more
    than system + user messages), so prompt optimization has something to fix.
    """
    splits = load_fact_qa(seed=0, n_train=8, n_dev=6, n_test=10)
    examples = [ex for split in splits.values() for ex in split]

    def reply(body: dict) -> str:
        last = body["messages"][-1]["content"]
        for ex in examples:
            if "[[ ## context ## ]]" in last and ex.context in last and ex.question in last:
                return f"[[ ## fact ## ]]\n{ex.fact}\n\n[[ ## completed ## ]]"
            if "[[ ## fact ## ]]" in last and ex.fact in last and ex.question in last:
                right = not answer_needs_demos or len(body["messages"]) > 2
                return f"[[ ## answer ## ]]\n{ex.answer if right else 'unknown'}\n\n[[ ## completed ## ]]"
        return "no markers here"

    return reply


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_eval_against_a_server_writes_the_run_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with FakeVLLM(reply_fn=_fact_qa_replies()) as server:
        result = runner.invoke(
            app,
            [
                "eval",
                str(CONFIGS / "eval.yaml"),
                f"server.api_base={server.api_base}",
                f"run_dir={run}",
                *SMALL,
            ],
        )
    assert result.exit_code == 0, result.output
    assert "test: 100.0%" in result.output
    row = next(r for r in _metrics(run) if r.get("phase") == "eval")
    assert row["split"] == "test" and row["n"] == 10 and row["score"] == 100.0 and row["errors"] == {}
    assert row["usage"]["calls"] == 20  # two predictor calls per example
    program = FactQA()
    program.load(run / "program.json")
    assert len((run / "results.jsonl").read_text().splitlines()) == 10
    report = (run / "report.md").read_text()
    assert "100.0 [" in report and "FactQA" in report
    assert _is_png(run / "report.png")
    assert (run / "config.yaml").exists() and (run / "adapters").is_dir()
    assert "api_base: " + server.api_base in (run / "config.yaml").read_text()


def test_eval_counts_parse_failures_instead_of_crashing(tmp_path: Path) -> None:
    # Issue 14: an evaluation in which every example failed has no score and must not exit 0; the
    # error says how many failed and why. (The job layer may also record the failed rows first.)
    run = tmp_path / "run"
    with FakeVLLM(reply_fn=lambda body: "no markers here") as server:
        result = runner.invoke(
            app,
            [
                "eval",
                str(CONFIGS / "eval.yaml"),
                f"server.api_base={server.api_base}",
                f"run_dir={run}",
                *SMALL,
            ],
        )
    assert result.exit_code == 2, result.output
    assert "all 10 examples failed (10 parse), so there is no score" in result.output
    assert "no markers here" in result.output  # the first failure, with the raw completion
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert [r["error_kind"] for r in rows] == ["parse"] * 10  # what was scored is kept on disk
    job = json.loads((run / "job.json").read_text())
    assert job["status"] == "failed" and "10 parse" in job["error"]


def test_eval_of_a_program_bound_to_an_unknown_adapter_names_it(tmp_path: Path) -> None:
    from dspylite.lm import LM

    program = FactQA()
    program.set_lm(LM("sft-9", api_base="http://127.0.0.1:9/v1"))
    program.save(tmp_path / "program.json")
    with FakeVLLM() as server:
        result = runner.invoke(
            app,
            [
                "eval",
                str(CONFIGS / "eval.yaml"),
                f"server.api_base={server.api_base}",
                f"run_dir={tmp_path / 'run'}",
                f"program_path={tmp_path / 'program.json'}",
                *SMALL,
            ],
        )
    assert result.exit_code == 2
    line = _single_error_line(result.output)
    assert "'sft-9'" in line and "server.adapters.sft-9" in line


def test_eval_of_a_custom_program_on_a_jsonl_dataset(tmp_path: Path) -> None:
    (tmp_path / "my_echo_program.py").write_text(
        "import dspylite as dspy\n\n"
        "class Echo(dspy.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.say = dspy.Predict('word -> echo')\n\n"
        "    def forward(self, word):\n"
        "        return self.say(word=word)\n"
    )
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"word": w, "echo": w.upper()}) + "\n" for w in ["a", "b", "c", "d"]))

    def reply(body: dict) -> str:
        word = body["messages"][-1]["content"].split("[[ ## word ## ]]")[1].split()[0]
        echo = word.upper() if word in ("a", "b", "c") else "?"
        return f"[[ ## echo ## ]]\n{echo}\n\n[[ ## completed ## ]]"

    run = tmp_path / "run"
    with FakeVLLM(reply_fn=reply) as server:
        result = runner.invoke(
            app,
            [
                "eval",
                str(CONFIGS / "eval.yaml"),
                f"server.api_base={server.api_base}",
                f"run_dir={run}",
                "task.name=custom",
                "task.program=my_echo_program:Echo",
                f"task.python_path=[{tmp_path}]",
                f"task.dataset={data}",
                "task.inputs=[word]",
                "split=all",
            ],
        )
    assert result.exit_code == 0, result.output
    row = next(r for r in _metrics(run) if r.get("phase") == "eval")
    assert row["n"] == 4 and row["score"] == 75.0


def test_optimize_with_labeled_demos_beats_the_baseline(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with FakeVLLM(reply_fn=_fact_qa_replies(answer_needs_demos=True)) as server:
        result = runner.invoke(
            app,
            [
                "optimize",
                str(CONFIGS / "optimize.yaml"),
                f"server.api_base={server.api_base}",
                f"run_dir={run}",
                "optimizer.kind=labeled",
                "optimizer.labeled.k=2",
                *SMALL,
            ],
        )
    assert result.exit_code == 0, result.output
    job = json.loads((run / "job.json").read_text())
    assert job["optimizer"] == "LabeledFewShot"
    assert job["scores"]["baseline"]["test"]["score"] == 0.0
    assert job["scores"]["optimized"]["test"]["score"] == 100.0
    state = json.loads((run / "program.json").read_text())
    assert len(state["extract"]["demos"]) == 2 and len(state["answer"]["demos"]) == 2
    assert (run / "optimizer" / "report.md").exists()
    assert "+100.0" in (run / "report.md").read_text()


def test_better_together_prompt_only_strategy_keeps_each_stage(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with FakeVLLM(reply_fn=_fact_qa_replies(answer_needs_demos=True)) as server:
        result = runner.invoke(
            app,
            [
                "better-together",
                str(CONFIGS / "better_together.yaml"),
                f"server.api_base={server.api_base}",
                f"run_dir={run}",
                "strategy=p",
                "prompt.kind=labeled",
                "prompt.labeled.k=2",
                "valset_size=0",
                *SMALL,
            ],
        )
    assert result.exit_code == 0, result.output
    assert "best stage: p" in result.output
    stages = json.loads((run / "stages.json").read_text())
    assert [s["name"] for s in stages] == ["baseline", "p"]
    assert sum(stages[0]["scores"]["val"]) == 0.0 and set(stages[1]["scores"]["val"]) == {1.0}
    assert (run / "stages" / "01-p" / "program.json").exists() and (run / "work" / "p-1").is_dir()
    job = json.loads((run / "job.json").read_text())
    assert job["best_stage"] == "p" and job["scores"]["best"]["test"]["score"] == 100.0
    assert (run / "program.json").exists() and _is_png(run / "report.png")


class _FakeFinetune(WeightOptimizer):
    """Stands in for BootstrapFinetune: records how the job built it and marks the program it returns."""

    built: list[dict] = []
    compiled: list[str] = []

    def __init__(self, metric, backend, config, **kwargs) -> None:  # noqa: ANN001
        type(self).built.append({"backend": backend, "config": config, **kwargs})
        self.backend = backend
        self.published: dict[str, str] = {}

    def compile(self, student, *, trainset, **_):  # noqa: ANN001, ANN201
        type(self).compiled.append(self.backend.run_dir.name)
        self.backend.run_dir.mkdir(parents=True)  # as the real one does; fails if a stage reused a directory
        tuned = student.deepcopy()
        for predictor in tuned.predictors():
            predictor.signature = predictor.signature.with_instructions("tuned weights (fake)")
        return tuned


def test_better_together_runs_each_stage_in_its_own_directory_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dspylite.optimizers.BootstrapFinetune", _FakeFinetune)
    monkeypatch.setattr(_FakeFinetune, "built", [])
    monkeypatch.setattr(_FakeFinetune, "compiled", [])
    run = tmp_path / "run"
    with FakeVLLM(reply_fn=_fact_qa_replies(answer_needs_demos=True)) as server:
        args = [
            "better-together",
            str(CONFIGS / "better_together.yaml"),
            f"server.api_base={server.api_base}",
            f"run_dir={run}",
            "strategy=p -> w -> p",
            "prompt.kind=labeled",
            "prompt.labeled.k=2",
            *SMALL,
        ]
        first = runner.invoke(app, args)
        assert first.exit_code == 0, first.output
        second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    stages = json.loads((run / "stages.json").read_text())
    assert [s["name"] for s in stages] == ["baseline", "p", "p -> w", "p -> w -> p"]
    assert _FakeFinetune.compiled == ["w-1"]  # the rerun skipped every finished stage
    built = _FakeFinetune.built[0]
    assert built["config"].run_name == "bt" and built["backend"].run_dir == run / "work" / "w-1"
    assert Path(built["backend"].registry.root) == (run / "adapters").resolve()  # the run's one registry
    assert sorted(p.name for p in (run / "work").iterdir()) == ["p-1", "p-2", "w-1"]
    state = json.loads((run / "stages" / "02-p-w" / "program.json").read_text())
    assert "tuned weights (fake)" in json.dumps(state)


# ---- reliability of the job layer (issue 14) -----------------------------------------------------------


def test_the_api_key_never_reaches_the_run_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    key = "sk-test-6f1c0e9b"
    with FakeVLLM(reply_fn=_fact_qa_replies(), api_key=key) as server:
        result = runner.invoke(
            app,
            [
                "eval",
                str(CONFIGS / "eval.yaml"),
                f"server.api_base={server.api_base}",
                f"server.api_key={key}",
                f"run_dir={run}",
                *SMALL,
            ],
        )
    assert result.exit_code == 0, result.output
    assert "api_key: <set>" in (run / "config.yaml").read_text()  # that a key was set, not the key
    leaked = [p for p in run.rglob("*") if p.is_file() and key.encode() in p.read_bytes()]
    assert leaked == []


def test_a_failing_job_records_failed_and_keeps_the_key_off_disk(tmp_path: Path) -> None:
    run = tmp_path / "run"
    key = "sk-test-0a9d"
    # Nothing listens on port 9: the job fails while connecting, after its run directory exists.
    result = runner.invoke(
        app,
        [
            "eval",
            str(CONFIGS / "eval.yaml"),
            "server.api_base=http://127.0.0.1:9/v1",
            f"server.api_key={key}",
            f"run_dir={run}",
            *SMALL,
        ],
    )
    assert result.exit_code == 2, result.output
    job = json.loads((run / "job.json").read_text())
    assert job["status"] == "failed" and "127.0.0.1:9" in job["error"]
    assert not any(key.encode() in p.read_bytes() for p in run.rglob("*") if p.is_file())


def test_an_empty_run_dir_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["eval", str(CONFIGS / "eval.yaml"), "run_dir=", *SMALL])
    assert result.exit_code == 2 and "run_dir is empty" in result.output
    assert list(tmp_path.iterdir()) == []  # nothing written into the current directory


def test_a_full_disk_is_a_clear_error_and_the_results_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from dspylite.modules.module import Module

    def full(self, path, *args, **kwargs):  # noqa: ANN001, ANN202
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(Module, "save", full)
    run = tmp_path / "run"
    with FakeVLLM(reply_fn=_fact_qa_replies()) as server:
        result = runner.invoke(
            app,
            [
                "eval",
                str(CONFIGS / "eval.yaml"),
                f"server.api_base={server.api_base}",
                f"run_dir={run}",
                *SMALL,
            ],
        )
    assert result.exit_code == 2, result.output
    assert "No space left on device" in result.output and "program.json" in result.output
    assert "Traceback" not in result.output
    assert len((run / "results.jsonl").read_text().splitlines()) == 10  # scored work written first
    assert json.loads((run / "job.json").read_text())["status"] == "failed"


def test_sigterm_during_a_job_unwinds_it_and_the_run_directory_says_interrupted(tmp_path: Path) -> None:
    import os
    import signal

    import typer

    from dspylite.cli import Terminated, _run_job
    from dspylite.jobs.session import _mark_failed
    from dspylite.run_dir import RunDir

    run = RunDir(tmp_path / "run")
    run.save_json("job.json", {"kind": "eval", "status": "running"})
    unwound: list[str] = []

    def job() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here, in the main thread
        except BaseException as exc:  # what open_session does with a job's exception
            unwound.append(type(exc).__name__)
            _mark_failed(run, exc)
            raise

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(typer.Exit) as exit_info:
        _run_job(job)
    assert exit_info.value.exit_code == 143 and unwound == [Terminated.__name__]
    assert run.load_json("job.json")["status"] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) == before  # the CLI's handler lives only while the job runs


def test_demo_report_compares_each_combined_stage_with_each_single_stage(tmp_path: Path) -> None:
    # Ten test examples. SFT is best on dev; BetterTogether is right on all ten, SFT on 6 (beats it), SFT + GRPO on SFT's 6 minus one (interval includes 0), GRPO from base below all.
    run = tmp_path / "run"
    run.mkdir()
    sft = [1] * 6 + [0] * 4

    def stage(index: int, name: str, dev: list[int], test: list[int]) -> dict:
        return {"index": index, "name": name, "scores": {"dev": dev, "test": test}, "program_path": "p"}

    stages = [
        stage(0, "baseline", [0, 0, 0, 0], [0] * 10),
        stage(1, "prompt", [1, 0, 0, 0], [1] * 3 + [0] * 7),
        stage(2, "sft", [1, 1, 1, 0], sft),
        stage(3, "grpo", [1, 1, 0, 0], [1] * 2 + [0] * 8),
        stage(4, "sft_grpo", [1, 1, 1, 0], [1] * 5 + [0] * 5),
        stage(6, "better_together", [1, 1, 1, 1], [1] * 10),
    ]
    (run / "stages.json").write_text(json.dumps(stages))
    (run / "job.json").write_text(json.dumps({"kind": "demo", "status": "done", "model": "m", "seconds": 60}))
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    text = (run / "report.md").read_text()
    section = text.split("## Combined vs single stages (test, paired)")[1].split("##")[0]
    assert "vs SFT (best on dev)" in section and "vs prompt-only |" in section and "vs GRPO |" in section
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    assert rows["BetterTogether"].endswith("| beats it |") and "+40.0 [" in rows["BetterTogether"]
    assert rows["SFT + GRPO"].endswith("| tie (interval includes 0) |") and "-10.0 [" in rows["SFT + GRPO"]
