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
from dspylite.evaluate.metrics import answer_exact_match
from dspylite.teleprompt import BootstrapFewShot
from serving import VLLMServer

pytestmark = pytest.mark.integration


class ConversationalQA(dspy.Module):
    def __init__(self):
        self.respond = dspy.Predict("context, question, history: dspy.History -> answer")

    def forward(self, context, question, history=None):
        return self.respond(context=context, question=question, history=history or dspy.History(messages=[]))


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

    program = ConversationalQA()
    result = dspy.Evaluate(devset=dev, metric=exact_match, num_threads=4, display_progress=False)(program)
    assert 0.0 <= result.score <= 100.0 and len(result.results) == len(dev)
    assert result.error_counts.get("metric", 0) == 0  # the two-argument metric was called as DSPy calls it

    turns = [entry for entry in task_lm.history if entry["messages"] is not None]
    assert turns, "no request reached the server"
    roles = [m["role"] for m in turns[-1]["messages"]]
    assert roles == ["system", "user", "assistant", "user"]  # the History turn sits before the new question

    compiled = BootstrapFewShot(
        metric=exact_match_with_trace, max_bootstrapped_demos=2, max_labeled_demos=2
    ).compile(ConversationalQA(), trainset=data["train"])
    assert len(compiled.respond.demos) <= 4

    outputs = dspy.Parallel(num_threads=4, max_errors=len(dev), disable_progress_bar=True)(
        [(compiled, ex) for ex in dev]
    )
    assert len(outputs) == len(dev)
    answered = [o for o in outputs if o is not None]
    assert answered and all(isinstance(o.answer, str) for o in answered)
