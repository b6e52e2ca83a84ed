"""Writes bench/data/gpu_check.jsonl: the pre-recorded rows the GPU check trains on.

Run once here (``python bench/gpu_check_data.py``); the file is committed so the GPU machine needs
no dspylite data code. Each line is one Fact QA problem formatted by the ChatAdapter for the
ExtractFact predictor (the first of FactQA's two modules):

- ``sft``: the prompt messages and the gold completion (BootstrapFinetune's row shape);
- ``rollouts``: four completions in the served format, as a GRPO group would hold them: the gold
  fact, and distractor sentences from the same context, with reward 1.0 / 0.0. They are written
  here, not sampled from a model (vLLM cannot run on the GPU machine); the check measures speed and
  memory, which depend on the token counts, not on who wrote the text.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from dspylite.adapters.chat import ChatAdapter
from dspylite.datasets.fact_qa import iter_fact_qa_items
from dspylite.datasets.programs import ExtractFact

OUT = Path(__file__).resolve().parent / "data" / "gpu_check.jsonl"
ROWS = 256
GROUP = 4


def main() -> None:
    adapter = ChatAdapter()
    rng = random.Random(0)
    lines = []
    for item in iter_fact_qa_items(seed=1234):
        if len(lines) == ROWS:
            break
        messages = adapter.format(ExtractFact, [], {"context": item.context, "question": item.question})
        gold = adapter.format_assistant_message_content(ExtractFact, {"fact": item.fact})
        others = [s for s in item.context.split("\n") if s.strip() and s.strip() != item.fact]
        completions = [(gold, 1.0)]
        for other in rng.sample(others, min(GROUP - 1, len(others))):
            completions.append(
                (adapter.format_assistant_message_content(ExtractFact, {"fact": other.strip()}), 0.0)
            )
        rng.shuffle(completions)
        lines.append(
            {
                "messages": messages,
                "completion": gold,
                "rollouts": [{"completion": c, "reward": r} for c, r in completions],
            }
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("".join(json.dumps(line) + "\n" for line in lines))
    print(f"wrote {len(lines)} rows to {OUT}")


if __name__ == "__main__":
    main()
