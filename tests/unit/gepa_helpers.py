"""Scripted task and reflection LMs for GEPA's unit tests.

The task LM answers kind-a and kind-b questions right only when the calling predictor's instruction
(the system message) contains ``RULE``, and kind-c questions only when it does not (so fixing one
kind can break another and the seed stays on the Pareto frontier); the reflection LM rewrites the current instruction by a script, so a test
decides which proposals help.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import dspylite as dspy
from dspylite.completion import Completion
from dspylite.utils import DummyLM


class RuleLM(DummyLM):
    def __init__(self, gold: dict[str, str]):
        super().__init__([], model="rule-lm")
        self.gold = gold

    def _answer(self, messages: list[dict[str, Any]], kwargs: dict[str, Any]) -> str:
        system = messages[0]["content"]
        last_user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        question = next(q for q in self.gold if q in last_user)
        wants_rule = "-c" not in question
        answer = self.gold[question] if ("RULE" in system) == wants_rule else "no idea"
        return self._render({"answer": answer}, kwargs)

    def calls_for(self, question: str) -> int:
        return sum(1 for h in self.history if question in h["messages"][-1]["content"])


class ScriptedReflectionLM:
    """Appends the next scripted suffix to the instruction it is shown (cycling), in gepa's ``` format."""

    def __init__(self, suffixes: list[str], *, fail_on_call: int | None = None):
        self.model = "reflect-lm"
        self.suffixes = suffixes
        self.calls = 0
        self.prompts: list[str] = []
        self.fail_on_call = fail_on_call
        self._lock = threading.Lock()

    def generate(self, messages: list[dict[str, Any]], **kwargs: Any) -> list[Completion]:
        with self._lock:
            self.calls += 1
            if self.fail_on_call is not None and self.calls == self.fail_on_call:
                raise KeyboardInterrupt("simulated kill during reflection")
            prompt = messages[-1]["content"]
            self.prompts.append(prompt)
            current = re.search(r"```\n(.*?)\n```", prompt, re.S).group(1).strip()
            suffix = self.suffixes[(self.calls - 1) % len(self.suffixes)]
        return [Completion(text=f"```\n{current} {suffix}\n```", model=self.model)]

    def copy(self, **overrides: Any) -> ScriptedReflectionLM:
        return self

    def dump_state(self) -> dict[str, Any]:
        return {"model": self.model}


class TwoPart(dspy.Module):
    """Kinds a and c go to ``pa``, kind b to ``pb``: each predictor's instruction matters for part of the data."""

    def __init__(self) -> None:
        super().__init__()
        self.pa = dspy.Predict(dspy.Signature("question -> answer", "Answer the A question."))
        self.pb = dspy.Predict(dspy.Signature("question -> answer", "Answer the B question."))

    def forward(self, question: str, kind: str) -> dspy.Prediction:
        return (self.pb if kind == "b" else self.pa)(question=question)


def make_data(
    n_train: int = 8, n_val: int = 6
) -> tuple[list[dspy.Example], list[dspy.Example], dict[str, str]]:
    def ex(i: int, split: str) -> dspy.Example:
        kind = "abc"[i % 3]
        return dspy.Example(question=f"{split}-{kind}{i}?", kind=kind, answer=f"{split}-ans{i}").with_inputs(
            "question", "kind"
        )

    train = [ex(i, "train") for i in range(n_train)]
    val = [ex(i, "val") for i in range(n_val)]
    gold = {e.question: e.answer for e in train + val}
    return train, val, gold


def exact_metric(
    gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
) -> Any:
    right = pred.answer == gold.answer
    return dspy.Prediction(
        score=float(right),
        feedback="correct" if right else f"wrong: said {pred.answer!r}, expected {gold.answer!r}",
    )
