"""One GRPO run on the scripted server of test_grpo_trainer, as a plain process or as one rank of
``accelerate launch``; test_grpo_distributed.py runs it both ways and compares.

    python tests/unit/grpo_dist_driver.py MODEL_DIR RUN_DIR [key=value ...]
    accelerate launch --multi_gpu --num_processes 2 tests/unit/grpo_dist_driver.py MODEL_DIR RUN_DIR ...

The scripted LM answers from a seed made of the rollout id and its call count, so with one rollout
and one validation thread the groups of every step are the same in every run, whatever the weights.
Rank 0 (or the only process) writes RUN_DIR/driver.json: per-step losses, what each rank did.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from test_grpo_trainer import FakeServer, SamplingLM, TwoStep, _config, _data, _trainer


def main(argv: list[str]) -> None:
    from rl import distributed

    model_dir, run_dir = Path(argv[0]), Path(argv[1])
    overrides = dict(item.split("=", 1) for item in argv[2:])
    settings = dict(
        num_steps=3,
        examples_per_step=4,
        rollout_threads=1,
        val_threads=1,
        val_every=0,
        precision="fp32",
        device="cpu",
        micro_batch_size=3,  # several micro-batches per rank: the split differs from one process's
        beta=0.04,  # the KL term's reference pass is sharded too
        tensorboard=False,
    )
    settings.update({k: (int(v) if v.lstrip("-").isdigit() else float(v)) for k, v in overrides.items()})
    cfg = _config(**settings)
    if distributed.launched_world_size() > 1 and distributed.launched_rank() != 0:
        distributed.run_worker(cfg)
        return
    distributed.init_from_env(cfg)
    try:
        lm = SamplingLM()
        trainer = _trainer(cfg, FakeServer(model_dir, lm), lm, run_dir)
        result = trainer.fit(TwoStep(), _data(8), _data(4, offset=100))
        rows = [r for r in trainer.run.metrics() if (r.get("step") or 0) > 0]
    finally:
        distributed.stop_workers()
    report = {
        "world_size": distributed.launched_world_size(),
        "losses": [r["loss"] for r in rows],
        "kls": [r["kl"] for r in rows],
        "grad_norms": [r["grad_norm"] for r in rows],
        "train_samples": [r["train_samples"] for r in rows],
        "micro_batches": [r["micro_batches"] for r in rows],
        "best_version": result.best_version,
        "pid": os.getpid(),
    }
    (run_dir / "driver.json").write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
