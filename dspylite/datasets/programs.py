"""Reference programs for the built-in tasks, shared by the demo, the tests and the benchmarks."""

from __future__ import annotations

from typing import Literal

from dspylite.example import Prediction
from dspylite.modules import Module, Predict
from dspylite.signatures import InputField, OutputField, Signature


class ExtractFact(Signature):
    """Copy the one sentence from the context that answers the question."""

    context: str = InputField(desc="short facts, one per line")
    question: str = InputField()
    fact: str = OutputField(desc="one sentence copied from the context")


class AnswerFromFact(Signature):
    """Answer the question with the short answer stated in the fact."""

    fact: str = InputField()
    question: str = InputField()
    answer: str = OutputField(desc="a word or number from the fact")


class ClassifyFactTopic(Signature):
    """Say what the fact is about."""

    sentence: str = InputField()
    topic: Literal["city", "colour", "age", "object", "job", "pets"] = OutputField()


class FactQA(Module):
    """Two steps: pick the relevant fact out of the context, then answer from that fact alone."""

    def __init__(self) -> None:
        super().__init__()
        self.extract = Predict(ExtractFact)
        self.answer = Predict(AnswerFromFact)

    def forward(self, context: str, question: str) -> Prediction:
        fact = self.extract(context=context, question=question).fact
        answer = self.answer(fact=fact, question=question).answer
        return Prediction(fact=fact, answer=answer)


class FactTopic(Module):
    """One step: classify a fact sentence into its topic."""

    def __init__(self) -> None:
        super().__init__()
        self.classify = Predict(ClassifyFactTopic)

    def forward(self, sentence: str) -> Prediction:
        return self.classify(sentence=sentence)


def math_program() -> Module:
    """A math word problem, as a DSPy user writes it: reason step by step, then a number (ASDiv, GSM8K)."""
    from dspylite.modules import ChainOfThought

    return ChainOfThought("question -> answer: float")


def sentiment_program() -> Module:
    """A sentence's sentiment, True for positive (SST-2): DSPy's first example, as its README writes it."""
    return Predict("sentence -> sentiment: bool")


def boolq_program() -> Module:
    """A yes/no question about a passage (BoolQ), answered directly. Predict, not ChainOfThought: on
    SmolLM2-135M the reasoning loops into max_tokens and costs ~5x the tokens for a lower score
    (configs/boolq_real.yaml has the measurement)."""
    return Predict("passage, question -> answer: bool")
