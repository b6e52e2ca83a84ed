"""Pretraining text for the tiny model, generated from the built-in tasks.

Chats are rendered by dspylite's own ChatAdapter for the reference programs' signatures, exactly as
programs will later prompt the served model; plain fact paragraphs add language around them. Noise
(wrong targets, broken output format) is injected on purpose: the base model should follow the
format only sometimes, leaving room for SFT and GRPO to improve it.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from typing import Any

from dspylite.datasets.fact_qa import FactQAItem, fact_qa_splits, iter_fact_qa_items
from dspylite.datasets.vocab import NAMES, RELATIONS_BY_NAME, random_fact
from sources.models.tiny_model.recipe import TinyModelRecipe

Messages = list[dict[str, str]]
Document = Messages | str  # a chat, or plain text


class ChatRenderer:
    """Renders (signature, demos, inputs, outputs) to chat messages through a dspylite adapter."""

    def __init__(self, adapter: Any = None) -> None:
        from dspylite.adapters import ChatAdapter
        from dspylite.datasets.programs import AnswerFromFact, ClassifyFactTopic, ExtractFact

        self.adapter = adapter or ChatAdapter()
        self.extract = ExtractFact
        self.answer = AnswerFromFact
        self.topic = ClassifyFactTopic

    def chat(
        self,
        signature: Any,
        inputs: dict[str, Any],
        outputs: dict[str, Any],
        demos: list[dict[str, Any]] | None = None,
        completion: str | None = None,
    ) -> Messages:
        messages = list(self.adapter.format(signature, demos or [], inputs))
        text = (
            completion
            if completion is not None
            else self.adapter.format_assistant_message_content(signature, outputs)
        )
        return [*messages, {"role": "assistant", "content": text}]

    def completion(self, signature: Any, outputs: dict[str, Any]) -> str:
        return self.adapter.format_assistant_message_content(signature, outputs)

    def fingerprint(self) -> str:
        """Changes whenever the adapter renders these signatures differently (invalidates the cache)."""
        item = next(iter_fact_qa_items(seed=12345))
        sample = [
            self.chat(
                self.extract, {"context": item.context, "question": item.question}, {"fact": item.fact}
            ),
            self.chat(self.answer, {"fact": item.fact, "question": item.question}, {"answer": item.answer}),
        ]
        return hashlib.sha256(json.dumps(sample, sort_keys=True).encode()).hexdigest()[:16]


def _corrupt_format(rng: random.Random, text: str, values: list[str]) -> str:
    """One of the ways a half-trained model gets the output format wrong."""
    kind = rng.randrange(4)
    if kind == 0:  # forgets the closing marker
        return text.split("[[ ## completed ## ]]")[0].rstrip()
    if kind == 1:  # bare value, no markers
        return " ".join(values)
    if kind == 2:  # stops early, mid-value
        cut = max(1, int(len(text) * rng.uniform(0.3, 0.8)))
        return text[:cut]
    return "Answer: " + " ".join(values)  # another format it may have seen elsewhere


def _distractor_sentence(rng: random.Random, item: FactQAItem) -> str:
    others = [line for line in item.context.split("\n") if line != item.fact]
    return rng.choice(others)


def _wrong_value(rng: random.Random, item: FactQAItem) -> str:
    relation = RELATIONS_BY_NAME[item.relation]
    for _ in range(10):
        value = relation.sample_value(rng)
        if value != item.answer:
            return value
    return value


class CorpusGenerator:
    """A deterministic stream of pretraining documents for one recipe."""

    def __init__(self, recipe: TinyModelRecipe, renderer: ChatRenderer, exclude_seed: int = 0) -> None:
        self.recipe = recipe
        self.renderer = renderer
        self.rng = random.Random(f"tiny-corpus:{recipe.seed}")
        # Held-out problems of the default splits never appear in pretraining.
        held_out = fact_qa_splits(seed=exclude_seed)
        exclude = {item.key for split in ("dev", "test") for item in held_out[split]}
        self.items = iter_fact_qa_items(seed=10_000 + recipe.seed, exclude=exclude)
        kinds = {
            "extract": recipe.share_extract,
            "answer": recipe.share_answer,
            "topic": recipe.share_topic,
            "plain": recipe.share_plain,
        }
        self.kinds = [k for k, w in kinds.items() if w > 0]
        self.weights = [kinds[k] for k in self.kinds]

    def __iter__(self) -> Iterator[Document]:
        while True:
            kind = self.rng.choices(self.kinds, weights=self.weights)[0]
            yield getattr(self, f"_{kind}")()

    def _demos(self, to_demo: Any) -> list[dict[str, Any]]:
        if self.rng.random() >= self.recipe.demo_probability:
            return []
        return [to_demo(next(self.items)) for _ in range(self.rng.randint(1, 2))]

    def _finish(self, signature: Any, outputs: dict[str, str], demos: list) -> str | None:
        """The completion text, sometimes broken. Chats with demos always show the clean format,
        so that few-shot prompts make the format more reliable."""
        if demos or self.rng.random() >= self.recipe.format_noise_probability:
            return None
        clean = self.renderer.completion(signature, outputs)
        return _corrupt_format(self.rng, clean, list(outputs.values()))

    def _extract(self) -> Messages:
        item = next(self.items)
        fact = item.fact
        if self.rng.random() < self.recipe.wrong_target_probability:
            fact = _distractor_sentence(self.rng, item)
        demos = self._demos(lambda d: {"context": d.context, "question": d.question, "fact": d.fact})
        sig = self.renderer.extract
        return self.renderer.chat(
            sig, {"context": item.context, "question": item.question}, {"fact": fact},
            demos=demos, completion=self._finish(sig, {"fact": fact}, demos),
        )  # fmt: skip

    def _answer(self) -> Messages:
        item = next(self.items)
        answer = item.answer
        if self.rng.random() < self.recipe.wrong_target_probability:
            answer = _wrong_value(self.rng, item)
        demos = self._demos(lambda d: {"fact": d.fact, "question": d.question, "answer": d.answer})
        sig = self.renderer.answer
        return self.renderer.chat(
            sig, {"fact": item.fact, "question": item.question}, {"answer": answer},
            demos=demos, completion=self._finish(sig, {"answer": answer}, demos),
        )  # fmt: skip

    def _topic(self) -> Messages:
        fact = random_fact(self.rng)
        sig = self.renderer.topic
        return self.renderer.chat(sig, {"sentence": fact.sentence}, {"topic": fact.relation.name})

    def _plain(self) -> str:
        """A few facts, then the program's two steps in compact form: question, fact, answer.

        Short and dense: one document carries several supervised copies instead of one per chat.
        """
        people = self.rng.sample(NAMES, k=self.rng.randint(2, 3))
        drawn = [random_fact(self.rng, person=self.rng.choice(people)) for _ in range(self.rng.randint(3, 6))]
        # One value per (person, relation): the text never contradicts itself.
        facts = list({(f.person, f.relation.name): f for f in drawn}.values())
        lines = [f.sentence for f in facts]
        for fact in self.rng.sample(facts, k=min(3, len(facts))):
            lines.append(f"Q: {fact.question}\nF: {fact.sentence}\nA: {fact.value}")
        return "\n".join(lines)
