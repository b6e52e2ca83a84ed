"""GRPO over whole programs: rollouts from vLLM, groups and advantages, the loss on LoRA weights, the loop.

- ``rl.rollouts``: K program runs per example at temperature > 0, cache off, traces and rewards;
- ``rl.groups``: groups per (example, predictor, call index) and group-relative advantages;
- ``rl.batching`` / ``rl.loss``: token batches from the server's ids (shared prompts run once) and
  the clipped policy-gradient loss with an optional KL to the base model;
- ``rl.policy``: the PEFT LoRA model, its AdamW optimizer and the update;
- ``rl.trainer``: the step loop, adapter versions hot-loaded into vLLM, validation, checkpoints;
- ``rl.config``: the typed config (``dspylite grpo configs/grpo.yaml`` runs it: dspylite.jobs.grpo_job).

Importing this package imports neither torch nor transformers; the modules that need them import them
inside the functions that train.
"""
