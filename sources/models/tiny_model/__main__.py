"""``python -m sources.models.tiny_model``: build (or find in the cache) the tiny local base model."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields

from sources.models.tiny_model.build import build_tiny_model, read_marker
from sources.models.tiny_model.recipe import TinyModelRecipe


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sources.models.tiny_model",
        description="Build the tiny Llama base model (tokenizer + a few minutes of CPU pretraining on the "
        "built-in Fact QA task) and print its directory. Reuses a cached build with the same recipe.",
    )
    parser.add_argument(
        "--out-dir",
        default=None,
        help="model directory (default: $DSPYLITE_HOME/models/tiny-llama-<recipe hash>)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for data, tokenizer and weights")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the same seed gives the same weights)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if a cached build exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    defaults = TinyModelRecipe()
    recipe_group = parser.add_argument_group("recipe (each changes the cache key)")
    for f in fields(TinyModelRecipe):
        if f.name == "seed":
            continue
        default = getattr(defaults, f.name)
        recipe_group.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=_parse_bool if isinstance(default, bool) else type(default),
            default=None,
            help=f"default: {default}",
        )
    return parser


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    overrides = {
        f.name: getattr(args, f.name)
        for f in fields(TinyModelRecipe)
        if f.name != "seed" and getattr(args, f.name) is not None
    }
    bars: list = []  # created on the first step, so a cache hit shows no bar
    on_step = None
    if not args.quiet:
        from tqdm import tqdm

        steps = overrides.get("steps", TinyModelRecipe().steps)

        def on_step(step: int, loss: float) -> None:
            if not bars:
                bars.append(tqdm(total=steps, desc="pretraining", unit="step", leave=False))
            bars[0].update(1)
            bars[0].set_postfix(loss=f"{loss:.3f}")

    try:
        path = build_tiny_model(
            args.out_dir,
            seed=args.seed,
            force=args.force,
            num_threads=args.threads,
            on_step=on_step,
            **overrides,
        )
    finally:
        for bar in bars:
            bar.close()
    marker = read_marker(path) or {}
    print(json.dumps({"model_dir": str(path), "stats": marker.get("stats")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
