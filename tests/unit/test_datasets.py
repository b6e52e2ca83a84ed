"""The built-in synthetic tasks: determinism, disjoint splits, metrics, and the reference programs."""

from __future__ import annotations

import pytest

import dspylite
from dspylite.datasets import (
    TOPICS,
    fact_match_metric,
    fact_qa_copy_reward,
    fact_qa_metric,
    fact_qa_partial_metric,
    fact_qa_splits,
    fact_topic_metric,
    load_fact_qa,
    load_fact_topic,
    normalize_answer,
)
from dspylite.datasets.programs import AnswerFromFact, ExtractFact, FactQA, FactTopic
from dspylite.example import Example, Prediction
from dspylite.utils.dummy_lm import DummyLM


def _keys(examples: list[Example]) -> set[tuple[str, str]]:
    return {(e.context, e.question) for e in examples}


def test_fact_qa_is_deterministic_for_a_seed_and_differs_across_seeds() -> None:
    first = load_fact_qa(seed=3, n_train=50, n_dev=20, n_test=20)
    again = load_fact_qa(seed=3, n_train=50, n_dev=20, n_test=20)
    other = load_fact_qa(seed=4, n_train=50, n_dev=20, n_test=20)
    for split in ("train", "dev", "test"):
        assert [e.toDict() for e in first[split]] == [e.toDict() for e in again[split]]
    assert [e.toDict() for e in first["dev"]] != [e.toDict() for e in other["dev"]]


def test_default_splits_are_large_disjoint_and_marked_with_inputs() -> None:
    data = load_fact_qa()
    assert len(data["train"]) >= 300 and len(data["dev"]) >= 200 and len(data["test"]) >= 200
    train, dev, test = (_keys(data[s]) for s in ("train", "dev", "test"))
    assert len(train) == len(data["train"])  # no duplicates inside a split either
    assert not (train & dev) and not (train & test) and not (dev & test)
    example = data["dev"][0]
    assert example.input_keys == frozenset({"context", "question"})
    assert set(example.labels()) == {"fact", "answer"}


def test_each_problem_is_answerable_from_its_gold_fact_with_both_kinds_of_distractor() -> None:
    for item in fact_qa_splits(seed=1, n_train=200, n_dev=0, n_test=0)["train"]:
        lines = item.context.split("\n")
        assert 4 <= len(lines) <= 6
        assert lines.count(item.fact) == 1
        assert item.answer in item.fact
        person = item.fact.split(" ")[0].split("'")[0]
        assert person in item.question
        same_person = [
            line for line in lines if line != item.fact and line.startswith((person + " ", person + "'"))
        ]
        assert same_person, f"no same-person distractor in {item.context!r}"
        assert len(lines) > len(same_person) + 1  # facts about other people too


def test_fact_qa_metric_normalizes_and_scores() -> None:
    example = Example(
        context="c", question="Where does Ava live?", fact="Ava lives in Paris.", answer="Paris"
    )
    assert fact_qa_metric(example, Prediction(answer=" paris. ")) == 1.0
    assert fact_qa_metric(example, Prediction(answer="the Paris")) == 1.0
    assert fact_qa_metric(example, Prediction(answer="Lima")) == 0.0
    assert fact_qa_metric(example, Prediction(fact="Ava lives in Paris.")) == 0.0  # no answer field
    assert fact_qa_metric(example, {"answer": "Paris"}, trace=[]) == 1.0
    assert fact_match_metric(example, Prediction(fact="ava lives in paris")) == 1.0
    assert fact_match_metric(example, Prediction(fact="Ava lives in Lima.")) == 0.0
    assert fact_qa_partial_metric(example, Prediction(fact="Ava lives in Paris.", answer="Lima")) == 0.25
    assert fact_qa_partial_metric(example, Prediction(fact="x", answer="Paris")) == 0.75
    assert fact_qa_partial_metric(example, Prediction(fact="Ava lives in Paris.", answer="Paris")) == 1.0


def test_normalize_answer() -> None:
    assert normalize_answer("  The  Red, Lamp! ") == "red lamp"
    assert normalize_answer("42") == "42"


def test_fact_topic_splits_and_metric() -> None:
    data = load_fact_topic(seed=2)
    assert len(data["dev"]) >= 200 and len(data["test"]) >= 200
    sentences = [{e.sentence for e in data[s]} for s in ("train", "dev", "test")]
    assert not (sentences[0] & sentences[1]) and not (sentences[1] & sentences[2])
    assert {e.topic for e in data["train"]} == set(TOPICS)
    example = data["dev"][0]
    assert fact_topic_metric(example, Prediction(topic=example.topic.upper())) == 1.0
    wrong = next(t for t in TOPICS if t != example.topic)
    assert fact_topic_metric(example, Prediction(topic=wrong)) == 0.0


def test_fact_qa_program_has_two_predictors_and_chains_them() -> None:
    program = FactQA()
    names = [name for name, _ in program.named_predictors()]
    assert names == ["extract", "answer"]
    assert program.extract.signature.instructions == ExtractFact.instructions
    assert list(AnswerFromFact.input_fields) == ["fact", "question"]

    example = load_fact_qa(seed=5, n_train=1, n_dev=0, n_test=0)["train"][0]
    lm = DummyLM([{"fact": example.fact}, {"answer": example.answer}])
    with dspylite.context(lm=lm):
        prediction = program(**example.inputs())
    assert prediction.fact == example.fact and prediction.answer == example.answer
    assert fact_qa_metric(example, prediction) == 1.0
    # The second step saw the first step's output, not the whole context.
    second_user = lm.history[1]["messages"][-1]["content"]
    assert example.fact in second_user and example.context not in second_user


def test_fact_topic_program_parses_literal_topic() -> None:
    example = load_fact_topic(seed=0)["dev"][0]
    lm = DummyLM([{"topic": example.topic}])
    with dspylite.context(lm=lm):
        prediction = FactTopic()(sentence=example.sentence)
    assert fact_topic_metric(example, prediction) == 1.0


@pytest.mark.parametrize("n_dev", [0, 7])
def test_split_sizes_are_respected(n_dev: int) -> None:
    data = load_fact_qa(seed=9, n_train=3, n_dev=n_dev, n_test=2)
    assert [len(data[s]) for s in ("train", "dev", "test")] == [3, n_dev, 2]


def test_copy_reward_credits_a_whole_context_line_even_when_the_answer_is_wrong() -> None:
    example = Example(
        context="Ava lives in Paris.\nBo lives in Lima.",
        question="Where does Ava live?",
        fact="Ava lives in Paris.",
        answer="Paris",
    ).with_inputs("context", "question")
    assert fact_qa_copy_reward(
        example, Prediction(fact="Ava lives in Paris.", answer="Paris")
    ) == pytest.approx(1.0)
    assert fact_qa_copy_reward(example, Prediction(fact="Bo lives in Lima.", answer="Lima")) == pytest.approx(
        0.2
    )
    assert fact_qa_copy_reward(example, Prediction(fact="Ava lives Paris", answer="Paris")) == pytest.approx(
        0.6
    )
    assert fact_qa_copy_reward(example, Prediction(fact="Bo lives in Li", answer="x")) == 0.0
