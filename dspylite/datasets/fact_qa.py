"""Fact QA: a context of short facts and a question about one of them.

The reference program (``dspylite.datasets.programs.FactQA``) uses two predictors: one copies the
relevant fact out of the context, the other answers the question from that fact. Each context holds
distractors that share the question's person (other relation) or its relation (other person), so
picking "any sentence about the person" or "any sentence of the right kind" is not enough.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dspylite.datasets.normalize import normalize_answer
from dspylite.datasets.vocab import NAMES, RELATIONS, Fact, random_fact

if TYPE_CHECKING:
    from dspylite.example import Example

FACT_QA_INPUTS: tuple[str, ...] = ("context", "question")


@dataclass(frozen=True)
class FactQAItem:
    """One generated problem, before it becomes an Example."""

    context: str
    question: str
    fact: str
    answer: str
    relation: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.context, self.question)

    def as_dict(self) -> dict[str, str]:
        return {"context": self.context, "question": self.question, "fact": self.fact, "answer": self.answer}


def generate_fact_qa_item(rng: random.Random, min_facts: int = 4, max_facts: int = 6) -> FactQAItem:
    """Draw one problem; the same ``rng`` state always gives the same problem."""
    n_facts = rng.randint(min_facts, max_facts)
    people = rng.sample(NAMES, k=rng.randint(3, 4))
    target = random_fact(rng, person=people[0])

    facts: list[Fact] = [target]
    used = {(target.person, target.relation.name)}

    def add(fact: Fact) -> None:
        if (fact.person, fact.relation.name) not in used:
            used.add((fact.person, fact.relation.name))
            facts.append(fact)

    # The two kinds of distractor that make the extraction step non-trivial.
    add(random_fact(rng, person=rng.choice(people[1:]), relation=target.relation))
    add(
        random_fact(
            rng, person=target.person, relation=rng.choice([r for r in RELATIONS if r != target.relation])
        )
    )
    while len(facts) < n_facts:
        add(random_fact(rng, person=rng.choice(people)))

    rng.shuffle(facts)
    return FactQAItem(
        context="\n".join(f.sentence for f in facts),
        question=target.question,
        fact=target.sentence,
        answer=target.value,
        relation=target.relation.name,
    )


def iter_fact_qa_items(seed: int, exclude: set[tuple[str, str]] | None = None) -> Iterator[FactQAItem]:
    """An endless, deterministic stream of distinct problems (none whose key is in ``exclude``)."""
    rng = random.Random(f"fact_qa:{seed}")
    seen = set(exclude or ())
    while True:
        item = generate_fact_qa_item(rng)
        if item.key in seen:
            continue
        seen.add(item.key)
        yield item


def fact_qa_splits(
    seed: int = 0, n_train: int = 600, n_dev: int = 300, n_test: int = 300
) -> dict[str, list[FactQAItem]]:
    """Disjoint train/dev/test lists of raw items (deduplicated on context + question)."""
    stream = iter_fact_qa_items(seed)
    return {
        "train": [next(stream) for _ in range(n_train)],
        "dev": [next(stream) for _ in range(n_dev)],
        "test": [next(stream) for _ in range(n_test)],
    }


def load_fact_qa(
    seed: int = 0, n_train: int = 600, n_dev: int = 300, n_test: int = 300
) -> dict[str, list[Example]]:
    """The Fact QA splits as Examples with inputs ``context`` and ``question``.

    Labels are ``fact`` (the gold sentence) and ``answer``.
    """
    from dspylite.example import Example

    splits = fact_qa_splits(seed=seed, n_train=n_train, n_dev=n_dev, n_test=n_test)
    return {
        name: [Example(**item.as_dict()).with_inputs(*FACT_QA_INPUTS) for item in items]
        for name, items in splits.items()
    }


def _field(obj: object, name: str) -> object:
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def fact_qa_metric(example: object, prediction: object, trace: object = None) -> float:
    """1.0 when the predicted answer equals the gold answer after normalization, else 0.0."""
    predicted = _field(prediction, "answer")
    if predicted is None:
        return 0.0
    return float(normalize_answer(str(predicted)) == normalize_answer(str(_field(example, "answer"))))


def fact_match_metric(example: object, prediction: object, trace: object = None) -> float:
    """1.0 when the extracted fact equals the gold fact after normalization (scores step one alone)."""
    predicted = _field(prediction, "fact")
    if predicted is None:
        return 0.0
    return float(normalize_answer(str(predicted)) == normalize_answer(str(_field(example, "fact"))))


def fact_qa_partial_metric(example: object, prediction: object, trace: object = None) -> float:
    """A denser reward for RL: 0.75 for the right answer, 0.25 for the right fact."""
    return 0.75 * fact_qa_metric(example, prediction) + 0.25 * fact_match_metric(example, prediction)


def fact_qa_copy_reward(example: object, prediction: object, trace: object = None) -> float:
    """A shaped RL reward: 0.6 for the answer, 0.2 for the exact fact, 0.2 for copying any context line whole.

    Most of the tiny model's misses are garbled copies (a third of its extractions on held-out data),
    and an answer-only reward says nothing about them when the answer is wrong anyway; the copy term
    rewards a clean copy even of the wrong line, so groups differ and carry a gradient.
    """
    predicted = _field(prediction, "fact")
    lines = {
        normalize_answer(line) for line in str(_field(example, "context") or "").splitlines() if line.strip()
    }
    copied = float(predicted is not None and normalize_answer(str(predicted)) in lines)
    return (
        0.6 * fact_qa_metric(example, prediction)
        + 0.2 * fact_match_metric(example, prediction)
        + 0.2 * copied
    )
