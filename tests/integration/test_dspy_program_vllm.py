"""A program written the DSPy way runs unchanged on the real vLLM server (tiny model).

It uses DSPy's paths and call shapes: ``from dspylite.teleprompt import BootstrapFewShot``,
``dspylite.evaluate.metrics``, a two-argument metric for ``Evaluate``, ``dspylite.History`` for an
earlier turn and ``dspylite.Parallel`` to fan out. The tiny model's answers are mostly wrong; the
checks are that every piece runs against the server and reports what it did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import dspylite as dspy
from dspylite.datasets import load_fact_qa
from dspylite.datasets.programs import AnswerFromFact, ExtractFact
from dspylite.evaluate.metrics import answer_exact_match
from dspylite.teleprompt import BootstrapFewShot
from serving import VLLMServer

pytestmark = pytest.mark.integration


class ConversationalFactQA(dspy.Module):
    """The tiny model's task (extract a fact, answer from it), with the conversation so far as a History."""

    def __init__(self):
        self.extract = dspy.Predict(ExtractFact)
        self.answer = dspy.Predict(AnswerFromFact.append("history", dspy.InputField(), type_=dspy.History))

    def forward(self, context, question, history=None):
        fact = self.extract(context=context, question=question).fact
        return self.answer(fact=fact, question=question, history=history or dspy.History(messages=[]))


def exact_match(example, pred):  # DSPy's Evaluate calls metrics with two arguments
    return answer_exact_match(example, pred)


def exact_match_with_trace(example, pred, trace=None):  # DSPy's optimizers pass a trace
    return answer_exact_match(example, pred)


@pytest.fixture
def task_lm(vllm_server: VLLMServer, tmp_path: Path) -> Any:
    lm = vllm_server.lm(max_tokens=64, cache_dir=tmp_path / "lm-cache")
    with dspy.context(lm=lm):
        yield lm


def test_dspy_style_program_runs_on_vllm(task_lm: Any) -> None:
    data = load_fact_qa(seed=5, n_train=6, n_dev=6, n_test=0)
    earlier = dspy.History(messages=[{"question": "What is this about?", "answer": "facts"}])
    dev = [ex.copy(history=earlier).with_inputs("context", "question", "history") for ex in data["dev"]]

    program = ConversationalFactQA()
    result = dspy.Evaluate(devset=dev, metric=exact_match, num_threads=4, display_progress=False)(program)
    assert 0.0 <= result.score <= 100.0 and len(result.results) == len(dev)
    assert result.error_counts.get("metric", 0) == 0  # the two-argument metric was called as DSPy calls it

    # The answer step is the one whose signature has the history field (listed in its system prompt).
    answer_requests = [
        e for e in task_lm.history if e["messages"] and "`history` (History)" in e["messages"][0]["content"]
    ]
    assert answer_requests, "no answer-step request reached the server"
    for entry in answer_requests:  # the History turn sits between the system prompt and the new question
        assert [m["role"] for m in entry["messages"]] == ["system", "user", "assistant", "user"]
        assert "What is this about?" in entry["messages"][1]["content"]

    compiled = BootstrapFewShot(
        metric=exact_match_with_trace, max_bootstrapped_demos=2, max_labeled_demos=2
    ).compile(ConversationalFactQA(), trainset=data["train"])
    assert all(len(p.demos) <= 4 for p in compiled.predictors())

    outputs = dspy.Parallel(num_threads=4, max_errors=len(dev), disable_progress_bar=True)(
        [(compiled, ex) for ex in dev]
    )
    assert len(outputs) == len(dev)
    answered = [o for o in outputs if o is not None]
    assert answered and all(isinstance(o.answer, str) for o in answered)
