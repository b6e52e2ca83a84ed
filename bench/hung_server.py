"""Issue 14, item 2: how long an evaluation takes against a server that accepts connections and
never answers, and how it ends. Stdlib server, no vLLM.

    PYTHONPATH=.:tests python bench/hung_server.py --examples 2
    PYTHONPATH=.:tests python bench/hung_server.py --examples 200 --timeout 10 --retries 1
"""

from __future__ import annotations

import argparse
import json
import logging
import time

from raw_servers import HungServer

import dspylite as dspy
from dspylite.evaluate import Evaluate
from dspylite.example import Example
from dspylite.lm import LM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8, help="the eval job's default num_threads")
    parser.add_argument("--timeout", type=float, default=None, help="LM timeout (default: the LM's)")
    parser.add_argument("--retries", type=int, default=None, help="LM num_retries (default: the LM's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    settings = {
        k: v for k, v in {"timeout": args.timeout, "num_retries": args.retries}.items() if v is not None
    }
    devset = [Example(question=f"q{i}", answer="a").with_inputs("question") for i in range(args.examples)]
    with HungServer() as server:
        lm = LM("tiny", api_base=server.api_base, cache=False, **settings)
        program = dspy.Predict("question -> answer", lm=lm)
        evaluate = Evaluate(
            devset=devset, metric=lambda e, p, t=None: 1.0, num_threads=args.threads, display_progress=False
        )
        started = time.perf_counter()
        try:
            result = evaluate(program)
            outcome = {"returned_score": result.score, "errors": result.error_counts}
        except Exception as exc:  # noqa: BLE001 - what is measured is how it ends
            outcome = {"raised": type(exc).__name__, "message": str(exc)[:300]}
        seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "examples": args.examples,
                "threads": args.threads,
                "timeout": lm.timeout,
                "num_retries": lm.num_retries,
                "max_consecutive_failures": lm.max_consecutive_failures,
                "connections": server.connections,
                "wall_s": round(seconds, 1),
                **outcome,
            }
        )
    )


if __name__ == "__main__":
    main()
