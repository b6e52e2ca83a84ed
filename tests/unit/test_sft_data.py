"""Traces -> SFT rows (finetune.data): filtering, exact messages + raw completion, dedupe, split, lengths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dspylite as dspy
from dspylite.datasets import fact_qa_metric, load_fact_qa
from dspylite.datasets.programs import FactQA
from dspylite.errors import TrainingError
from dspylite.evaluate import ExampleResult, run_one
from dspylite.example import Example
from dspylite.trace import TraceRecord
from dspylite.utils.dummy_lm import DummyLM
from finetune.data import SFTData, build_sft_data, require_rows


def record(
    predictor: str = "answer",
    *,
    user: str = "q1",
    completion: str = "[[ ## answer ## ]]\n4",
    outputs: dict | None = None,
    error: str | None = None,
    model: str = "base",
    example_id: str = "e1",
    finish_reason: str = "stop",
    token_ids: list[int] | None = None,
    rollout_id: int | None = None,
) -> TraceRecord:
    return TraceRecord(
        predictor_name=predictor,
        signature="question -> answer",
        inputs={"question": user},
        messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": user}],
        completion=completion,
        model=model,
        adapter="chat",
        outputs=outputs if outputs is not None or error else {"answer": "4"},
        error=error,
        prompt_token_ids=[1, 2, 3] if token_ids else None,
        completion_token_ids=token_ids,
        finish_reason=finish_reason,
        example_id=example_id,
        rollout_id=rollout_id,
    )


def run(
    score: float, *records: TraceRecord, error: str | None = None, kind: str | None = None
) -> ExampleResult:
    return ExampleResult(Example(question="q"), None, score, error, kind, list(records))


class WordTokenizer:
    """Counts whitespace-separated words of the rendered chat; enough to test the length checks."""

    chat_template = "{{ messages }}"
    model_max_length = 10**30  # transformers' "no limit" sentinel

    def apply_chat_template(self, messages, tokenize=True, return_dict=False):
        text = " ".join(f"<{m['role']}> {m['content']}" for m in messages)
        return list(range(len(text.split())))


# ---- filtering ------------------------------------------------------------------------------------------


def test_only_runs_at_or_above_the_threshold_become_rows() -> None:
    runs = [
        run(1.0, record(user="a", example_id="a")),
        run(0.0, record(user="b", example_id="b")),
        run(0.5, record(user="c", example_id="c")),
    ]
    data = build_sft_data(runs, metric_threshold=1.0, val_fraction=0.0)
    assert [r.prompt[-1]["content"] for r in data.train] == ["a"]
    assert data.card.runs_total == 3 and data.card.runs_passed == 1
    assert data.card.runs_dropped["below_threshold"] == 2

    looser = build_sft_data(runs, metric_threshold=0.5, val_fraction=0.0)
    assert sorted(r.prompt[-1]["content"] for r in looser.train) == ["a", "c"]


def test_failed_runs_are_counted_by_reason() -> None:
    runs = [
        run(1.0, record(user="ok")),
        run(0.0, record(user="p"), error="parse: bad", kind="parse"),
        run(0.0, record(user="m"), error="metric: ZeroDivisionError", kind="metric"),
        run(1.0),  # passing run without traces
    ]
    card = build_sft_data(runs, val_fraction=0.0).card
    assert card.runs_dropped == {"below_threshold": 0, "program_error": 1, "metric_error": 1, "no_traces": 1}
    assert "ZeroDivisionError" in card.first_errors["metric_error"]


def test_parse_errors_truncations_and_empty_completions_are_skipped_and_counted() -> None:
    runs = [
        run(
            1.0,
            record(user="good"),
            record(user="bad", completion="garbage", error="missing output field(s) ['answer']"),
            record(user="cut", finish_reason="length"),
            record(user="empty", completion="  "),
        )
    ]
    data = build_sft_data(runs, val_fraction=0.0)
    assert [r.prompt[-1]["content"] for r in data.train] == ["good"]
    dropped = data.card.records_dropped
    assert (dropped["parse_error"], dropped["truncated_completion"], dropped["empty_completion"]) == (1, 1, 1)
    assert "missing output field" in data.card.first_errors["parse_error"]
    kept = build_sft_data(runs, val_fraction=0.0, keep_truncated=True)
    assert sorted(r.prompt[-1]["content"] for r in kept.train) == ["cut", "good"]


def test_rows_use_the_exact_messages_and_the_raw_completion_not_the_parsed_outputs() -> None:
    raw = "[[ ## answer ## ]]\n  four (4)  \n\n[[ ## completed ## ]]\n"
    rec = record(completion=raw, outputs={"answer": "4"}, token_ids=[7, 8, 9], rollout_id=3)
    row = build_sft_data([run(1.0, rec)], val_fraction=0.0).train[0]
    assert row.prompt == rec.messages
    assert row.prompt is not rec.messages  # a copy: later edits to the trace cannot leak into the data
    assert row.completion == [{"role": "assistant", "content": raw}]
    assert (row.prompt_token_ids, row.completion_token_ids) == ([1, 2, 3], [7, 8, 9])
    assert (row.predictor, row.example_id, row.rollout_id, row.model) == ("answer", "e1", 3, "base")


def test_rows_from_a_real_program_run_match_what_the_adapter_sent() -> None:
    example = load_fact_qa(n_train=1, n_dev=0, n_test=0)["train"][0]
    lm = DummyLM([{"fact": example.fact}, {"answer": f"  {example.answer}"}])
    with dspy.context(lm=lm):
        result = run_one(FactQA(), example, fact_qa_metric, keep_traces=True)
    assert result.score == 1.0
    data = build_sft_data([result], val_fraction=0.0)
    assert [r.predictor for r in data.train] == ["extract", "answer"]
    for row, sent in zip(data.train, lm.history, strict=True):
        assert row.prompt == sent["messages"]
        assert row.completion[0]["content"] == sent["outputs"][0]


def test_traces_from_another_model_are_refused_with_its_name() -> None:
    runs = [run(1.0, record(model="base")), run(1.0, record(user="x", model="gpt-big", example_id="x"))]
    with pytest.raises(TrainingError, match=r"'gpt-big'.*neither the base model"):
        build_sft_data(runs, allowed_models=["base", "sft-1"])
    data = build_sft_data(runs, allowed_models=["base", "gpt-big"], val_fraction=0.0)
    assert data.card.models == {"base": 1, "gpt-big": 1}


def test_predictor_filter_keeps_only_named_predictors() -> None:
    runs = [run(1.0, record("extract", user="a"), record("answer", user="b"))]
    data = build_sft_data(runs, predictors=["answer"], val_fraction=0.0)
    assert [r.predictor for r in data.train] == ["answer"]


# ---- dedupe and split --------------------------------------------------------------------------------


def test_duplicates_are_dropped_and_counted() -> None:
    same = [run(1.0, record(user="a", example_id="a", rollout_id=i)) for i in range(3)]
    other = run(1.0, record(user="a", completion="[[ ## answer ## ]]\n5", example_id="a"))
    data = build_sft_data([*same, other], val_fraction=0.0)
    assert len(data.train) == 2
    assert data.card.records_dropped["duplicate"] == 2
    assert len(build_sft_data([*same, other], val_fraction=0.0, dedupe=False).train) == 4


def _many_runs(n: int = 40) -> list[ExampleResult]:
    return [
        run(
            1.0,
            record("extract", user=f"x{i}", example_id=f"e{i}"),
            record("answer", user=f"y{i}", example_id=f"e{i}"),
        )
        for i in range(n)
    ]


def test_split_is_seeded_by_example_and_sized_by_val_fraction() -> None:
    a = build_sft_data(_many_runs(), val_fraction=0.25, seed=1)
    b = build_sft_data(_many_runs(), val_fraction=0.25, seed=1)
    c = build_sft_data(_many_runs(), val_fraction=0.25, seed=2)
    assert len(a.val) == 20 and len(a.train) == 60  # 10 of 40 examples, 2 rows each
    assert [r.key() for r in a.val] == [r.key() for r in b.val]
    assert a.data_hash == b.data_hash
    assert {r.example_id for r in a.val} != {r.example_id for r in c.val}
    assert a.data_hash != c.data_hash
    # both rows of an example land on the same side
    assert not {r.example_id for r in a.train} & {r.example_id for r in a.val}
    assert a.card.rows_per_predictor == {
        "extract": {"train": 30, "val": 10},
        "answer": {"train": 30, "val": 10},
    }


def test_bad_val_fraction_is_refused() -> None:
    with pytest.raises(TrainingError, match="val_fraction"):
        build_sft_data([], val_fraction=1.0)


# ---- token lengths ------------------------------------------------------------------------------------


def test_rows_longer_than_max_length_are_reported_not_truncated() -> None:
    long_user = " ".join(["word"] * 50)
    runs = [
        run(1.0, record(user="short", example_id="s")),
        run(1.0, record(user=long_user, example_id="long")),
    ]
    data = build_sft_data(runs, tokenizer=WordTokenizer(), max_length=20, val_fraction=0.0)
    assert [r.example_id for r in data.train] == ["s"]
    assert data.train[0].prompt[-1]["content"] == "short"
    assert data.card.records_dropped["too_long"] == 1
    assert data.card.too_long == [{"predictor": "answer", "example_id": "long", "tokens": 60}]
    assert data.card.max_length == 20
    assert data.train[0].num_tokens == data.card.token_lengths["max"] == 11
    assert "longer than 20 tokens" in data.card.to_markdown()


def test_without_max_length_the_tokenizer_limit_applies_unless_it_is_the_no_limit_sentinel() -> None:
    runs = [run(1.0, record(user=" ".join(["w"] * 30)))]
    assert len(build_sft_data(runs, tokenizer=WordTokenizer(), val_fraction=0.0).train) == 1
    limited = WordTokenizer()
    limited.model_max_length = 10
    assert len(build_sft_data(runs, tokenizer=limited, val_fraction=0.0).train) == 0


def test_a_tokenizer_without_chat_template_is_refused() -> None:
    tokenizer = WordTokenizer()
    tokenizer.chat_template = None
    with pytest.raises(TrainingError, match="no chat template"):
        build_sft_data([run(1.0, record())], tokenizer=tokenizer)


# ---- data card and files --------------------------------------------------------------------------------


def test_empty_data_explains_why() -> None:
    with pytest.raises(TrainingError, match="trainset is empty"):
        require_rows(build_sft_data([]))
    failing = build_sft_data([run(0.0, record()), run(0.0, record(user="b"))])
    with pytest.raises(TrainingError, match=r"0/2 runs passed \(dropped: below_threshold=2\)"):
        require_rows(failing)


def test_save_writes_dataset_jsonl_and_card_and_loads_back(tmp_path: Path) -> None:
    data = build_sft_data(_many_runs(10), val_fraction=0.2, seed=0)
    out = data.save(tmp_path / "data")
    train_lines = (out / "train.jsonl").read_text().splitlines()
    assert len(train_lines) == len(data.train)
    assert json.loads(train_lines[0])["completion"][0]["role"] == "assistant"
    card = json.loads((out / "data_card.json").read_text())
    assert card["rows_train"] == len(data.train) and card["rows_val"] == len(data.val)
    md = (out / "data_card.md").read_text()
    assert "| extract |" in md and "below_threshold" in md

    from datasets import load_from_disk

    saved = load_from_disk(str(out / "dataset"))
    assert sorted(saved) == ["train", "val"]
    assert saved["train"][0]["prompt"] == data.train[0].prompt
    assert saved["train"][0]["completion"] == data.train[0].completion

    loaded = SFTData.load(out)
    assert [r.key() for r in loaded.train] == [r.key() for r in data.train]
    assert loaded.data_hash == data.data_hash
    assert not list(out.glob(".*tmp*"))


def test_for_predictors_recounts_the_card() -> None:
    data = build_sft_data(_many_runs(10), val_fraction=0.2)
    only = data.for_predictors(["answer"])
    assert {r.predictor for r in only.rows()} == {"answer"}
    assert only.card.rows_train == len(only.train) == 8
    assert list(only.card.rows_per_predictor) == ["answer"]
    assert only.data_hash != data.data_hash


# ---- balancing over a class label --------------------------------------------------------------------


def label_runs(yes: int, no: int) -> list[ExampleResult]:
    runs = []
    for i in range(yes + no):
        answer = i < yes
        runs.append(
            run(
                1.0,
                record(
                    user=f"q{i}",
                    example_id=f"e{i}",
                    completion=json.dumps({"answer": answer}),
                    outputs={"answer": answer},
                ),
            )
        )
    return runs


def test_balance_field_cuts_every_value_to_the_rarest_ones_count() -> None:
    data = build_sft_data(label_runs(9, 3), val_fraction=0.0, balance_field="answer", seed=1)
    said = [json.loads(r.completion[0]["content"])["answer"] for r in data.train]
    assert sorted(said) == [False] * 3 + [True] * 3
    assert data.card.records_dropped["balance"] == 6
    assert data.card.balance == {
        "field": "answer",
        "before": {"answer": {"false": 3, "true": 9}},
        "after": {"answer": {"false": 3, "true": 3}},
    }
    assert "balanced over output field `answer`" in data.card.to_markdown()
    # the draw is seeded: a rebuild keeps the same rows
    again = build_sft_data(label_runs(9, 3), val_fraction=0.0, balance_field="answer", seed=1)
    assert [r.example_id for r in again.train] == [r.example_id for r in data.train]


def test_without_balance_field_every_passing_row_stays() -> None:
    data = build_sft_data(label_runs(9, 3), val_fraction=0.0)
    assert len(data.train) == 12 and data.card.balance == {}


def test_balance_field_naming_no_output_field_is_an_error() -> None:
    with pytest.raises(TrainingError, match="balance_field='sentiment'"):
        build_sft_data(label_runs(2, 2), val_fraction=0.0, balance_field="sentiment")


def test_balance_field_with_a_single_value_keeps_the_rows_and_says_so(caplog) -> None:
    data = build_sft_data(label_runs(4, 0), val_fraction=0.0, balance_field="answer")
    assert len(data.train) == 4
    assert "nothing to balance against" in caplog.text


def test_the_balance_survives_a_save_and_load(tmp_path: Path) -> None:
    data = build_sft_data(label_runs(5, 2), val_fraction=0.0, balance_field="answer")
    loaded = SFTData.load(data.save(tmp_path / "data"))
    assert loaded.card.balance == data.card.balance and len(loaded.train) == 4
