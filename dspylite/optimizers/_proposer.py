"""Instruction proposals for MIPROv2, written by an LM through ordinary dspylite predictors.

The proposer is a ``Predict`` with its own signatures, so it runs through the same LM client,
adapter, cache and traces as any program, on whichever LM the user picks (``prompt_model``).
Each proposal is grounded in a short summary of the data (itself written by the proposer LM), a
description of the program (its steps, their fields and instructions, and its source when it can be
read), a few demos of the step, and a style tip drawn with the seed.
"""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dspylite import settings as _settings
from dspylite.errors import AdapterParseError, LMError, NoLMConfiguredError, OptimizerError
from dspylite.example import Example
from dspylite.modules.predict import Predict
from dspylite.optimizers._eval import BudgetExhausted, LMBudget
from dspylite.signatures import InputField, OutputField, Signature
from dspylite.utils.parallel import parallel_map

logger = logging.getLogger(__name__)

_MAX_VALUE_CHARS = 300
_MAX_SOURCE_CHARS = 1500
_MAX_INSTRUCTION_CHARS = 1500

# Style hints that push the proposals apart; "" leaves the proposer free.
TIPS: dict[str, str] = {
    "none": "",
    "creative": "Be creative: try an angle the current instruction does not take.",
    "simple": "Keep it short, plain and direct.",
    "description": "Be thorough: spell out what the inputs hold and exactly what each output must contain.",
    "high_stakes": "Stress that the answers matter and that precision beats speed.",
    "persona": "Open with a persona suited to the task (for example 'You are a careful analyst ...').",
    "format": "Be explicit about the form of each output: its length, its type, and what to leave out.",
}


class DescribeData(Signature):
    """Read a sample of a dataset and describe it for someone who will write instructions for a model
    solving the task: what the inputs look like, what the expected outputs are, and any patterns
    worth knowing."""

    examples: str = InputField(desc="a sample of the dataset, one example per block")
    summary: str = OutputField(desc="three to five sentences")


class ProposeInstruction(Signature):
    """Write a better instruction for one step of a language-model program. The model running that
    step sees only this instruction, its input fields and (sometimes) a few demos, and must
    produce the step's output fields correctly."""

    dataset_summary: str = InputField(desc="what the data looks like")
    program_description: str = InputField(desc="the program's steps, their fields and current instructions")
    step: str = InputField(desc="the step to write an instruction for: its name and fields")
    current_instruction: str = InputField()
    step_demos: str = InputField(desc="worked examples of this step (may be empty)")
    tip: str = InputField(desc="a hint about the style of the new instruction (may be empty)")
    proposed_instruction: str = OutputField(desc="the new instruction, and nothing else")


@dataclass
class Proposals:
    instructions: dict[str, list[str]]  # per predictor: index 0 is the current instruction
    data_summary: str = ""
    attempted: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "instructions": self.instructions,
            "data_summary": self.data_summary,
            "attempted": self.attempted,
            "failures": self.failures,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Proposals:
        return cls(
            dict(data["instructions"]),
            data.get("data_summary", ""),
            int(data.get("attempted", 0)),
            dict(data.get("failures", {})),
        )


def render_example(example: Any, index: int) -> str:
    data = example.toDict() if isinstance(example, Example) else dict(example)
    lines = [f"Example {index + 1}:"]
    for key, value in data.items():
        if key == "augmented":
            continue
        text = str(value).replace("\n", " / ")
        lines.append(f"  {key}: {text[:_MAX_VALUE_CHARS]}")
    return "\n".join(lines)


def describe_step(name: str, predictor: Any) -> str:
    sig = predictor.signature
    fields = [
        f"{f.name} ({'input' if f.kind == 'input' else 'output'}, {f.type_name})"
        + (f": {f.desc}" if f.desc else "")
        for f in sig.fields.values()
    ]
    return f"{name}: {sig.signature}\n  fields: " + "; ".join(fields)


def describe_program(program: Any, *, with_source: bool = True) -> str:
    doc = (type(program).__doc__ or "").strip()  # the program's own docstring, not an inherited one
    parts = [f"Program {type(program).__name__}" + (f": {doc}" if doc else "")]
    for name, predictor in program.named_predictors():
        parts.append(
            f"- step {describe_step(name, predictor)}\n  instruction: {predictor.signature.instructions}"
        )
    if with_source:
        try:
            source = inspect.getsource(type(program))
        except (OSError, TypeError):
            source = ""
        if source:
            parts.append("Source:\n" + source[:_MAX_SOURCE_CHARS])
    return "\n".join(parts)


def clean_instruction(text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    text = text.strip().strip('"').strip("'").strip()
    if not text or len(text) > _MAX_INSTRUCTION_CHARS:
        return None
    return text


class InstructionProposer:
    def __init__(
        self,
        *,
        lm: Any,
        budget: LMBudget,
        seed: int,
        temperature: float,
        num_threads: int,
        data_aware: bool = True,
        program_aware: bool = True,
        tip_aware: bool = True,
        view_data_batch_size: int = 10,
    ):
        self.lm = lm
        self.budget = budget
        self.seed = seed
        self.temperature = temperature
        self.num_threads = num_threads
        self.data_aware = data_aware
        self.program_aware = program_aware
        self.tip_aware = tip_aware
        self.view_data_batch_size = view_data_batch_size

    def _lm(self) -> Any:
        lm = self.lm or _settings.current().lm
        if lm is None:
            raise OptimizerError(
                "MIPROv2 needs an LM to propose instructions: pass prompt_model=... "
                "(or task_model=...), or call dspylite.configure(lm=...)"
            )
        return self.budget.wrap(lm)

    def summarize_data(self, trainset: Sequence[Example], failures: dict[str, int]) -> str:
        if not self.data_aware:
            return ""
        rng = random.Random(f"{self.seed}:data")
        sample = rng.sample(list(trainset), min(self.view_data_batch_size, len(trainset)))
        text = "\n\n".join(render_example(ex, i) for i, ex in enumerate(sample))
        predictor = Predict(DescribeData, lm=self._lm(), temperature=self.temperature)
        try:
            return str(predictor(examples=text).summary).strip()
        except (AdapterParseError, LMError) as exc:
            kind = "parse" if isinstance(exc, AdapterParseError) else "lm"
            failures[kind] = failures.get(kind, 0) + 1
            logger.warning(
                "MIPROv2: the proposer LM could not summarize the data (%s); going on without a summary",
                type(exc).__name__,
            )
            return ""

    def propose(
        self,
        program: Any,
        trainset: Sequence[Example],
        demo_sets: list[dict[str, list[dict[str, Any]]]],
        num_candidates: int,
    ) -> Proposals:
        lm = self._lm()
        failures: dict[str, int] = {}
        summary = self.summarize_data(trainset, failures)
        description = describe_program(program, with_source=self.program_aware) if self.program_aware else ""
        predictors = dict(program.named_predictors())
        jobs = [(name, k) for name in predictors for k in range(1, num_candidates)]

        def one(job: tuple[str, int]) -> str | None:
            name, k = job
            predictor = predictors[name]
            rng = random.Random(f"{self.seed}:{name}:{k}")
            tip = TIPS[rng.choice(sorted(TIPS))] if self.tip_aware else ""
            demos = demo_sets[k % len(demo_sets)].get(name, []) if demo_sets else []
            demo_text = "\n\n".join(render_example(d, i) for i, d in enumerate(demos[:3]))
            proposer = Predict(ProposeInstruction, lm=lm, temperature=self.temperature)
            with _settings.context(rollout_id=k):  # distinct cache entries per candidate
                try:
                    out = proposer(
                        dataset_summary=summary,
                        program_description=description,
                        step=describe_step(name, predictor),
                        current_instruction=predictor.signature.instructions,
                        step_demos=demo_text,
                        tip=tip,
                    )
                except BudgetExhausted:
                    return None
                except (AdapterParseError, LMError, NoLMConfiguredError) as exc:
                    kind = "parse" if isinstance(exc, AdapterParseError) else "lm"
                    failures[kind] = failures.get(kind, 0) + 1
                    return None
            cleaned = clean_instruction(out.proposed_instruction)
            if cleaned is None:
                failures["empty_or_too_long"] = failures.get("empty_or_too_long", 0) + 1
            return cleaned

        outcomes = parallel_map(one, jobs, num_threads=self.num_threads)
        instructions: dict[str, list[str]] = {
            name: [p.signature.instructions] for name, p in predictors.items()
        }
        for (name, _), outcome in zip(jobs, outcomes, strict=True):
            if outcome.error is not None:
                raise outcome.error
            text = outcome.value
            if text and text.casefold() not in {t.casefold() for t in instructions[name]}:
                instructions[name].append(text)
        return Proposals(instructions, summary, len(jobs), failures)
