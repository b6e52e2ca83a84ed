"""``accelerate launch -m finetune.train CONFIG [key=value ...]``: LoRA SFT on saved rows, on every GPU.

Training only: the rows come from a data directory a BootstrapFinetune run saved (``<run_dir>/data``,
written by ``dspylite finetune`` or ``dspylite better-together``). No vLLM and no program runs happen
here, so the same command runs under ``accelerate launch`` (DDP or FSDP: configs/multi_gpu/) or as
plain ``python -m finetune.train`` on one device. The Trainer inside picks up the launcher's
processes by itself. Serve the adapter afterwards with ``dspylite serve MODEL server.adapters.NAME=PATH``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspylite.config_io import field_help as _help
from dspylite.config_io import load_config
from dspylite.errors import ConfigError, DSPyLiteError
from finetune.config import FinetuneConfig

logger = logging.getLogger(__name__)


@dataclass
class SFTTrainJobConfig:
    data: str = field(
        default="",
        metadata=_help("SFT data directory saved by a BootstrapFinetune run (e.g. runs/sft/data)."),
    )
    model: str = field(default="", metadata=_help("Base model directory to train the LoRA adapter on."))
    run_dir: str = field(
        default="runs/sft-multi-gpu", metadata=_help("Run directory: checkpoints/, adapters/, metrics.jsonl.")
    )
    adapter_name: str = field(default="", metadata=_help("Name of the new adapter version; empty: sft-<n>."))
    sft: FinetuneConfig = field(
        default_factory=FinetuneConfig, metadata=_help("LoRA SFT settings (finetune.config.FinetuneConfig).")
    )


def run(config: str | Path | None, overrides: list[str] | dict[str, Any] = ()) -> Any:
    """Train one adapter; returns ``finetune.sft.AdapterResult``."""
    from dspylite.run_dir import RunDir
    from finetune.data import SFTData
    from finetune.sft import train_lora

    cfg = load_config(SFTTrainJobConfig, config, overrides)
    if not cfg.data or not cfg.model:
        missing = [k for k in ("data", "model") if not getattr(cfg, k)]
        raise ConfigError(f"{missing} required: data=<SFT data directory> model=<base model directory>")
    data_dir = Path(cfg.data).expanduser()
    if not data_dir.is_dir():
        raise ConfigError(f"data={cfg.data!r}: no such directory")
    if not Path(cfg.model).expanduser().exists():
        raise ConfigError(f"model={cfg.model!r}: no such directory")
    run_dir = RunDir(cfg.run_dir)
    if _is_main_process():
        run_dir.write_config(cfg)
    return train_lora(
        SFTData.load(data_dir),
        cfg.sft,
        run_dir,
        adapter_name=cfg.adapter_name or None,
        model_path=cfg.model,
    )


def _is_main_process() -> bool:
    # accelerate/torchrun set RANK; a plain `python -m` run is rank 0.
    return os.environ.get("RANK", "0") == "0"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or "-h" in args or "--help" in args:
        from dspylite.config_io import config_keys

        # With CONFIG (and overrides) beside --help, the values this run would use; else the defaults.
        given = [arg for arg in args if arg not in ("-h", "--help")]
        try:
            cfg = load_config(SFTTrainJobConfig, given[0] if given else None, given[1:])
            source = " ".join(given) or "defaults"
        except DSPyLiteError as exc:
            cfg, source = SFTTrainJobConfig(), f"defaults ({exc})"
        sys.stdout.write(__doc__ or "")
        sys.stdout.write(
            f"\nusage: python -m finetune.train CONFIG [key=value ...]\n\nconfig keys ({source}):\n"
        )
        for key, value, text in config_keys(cfg):
            sys.stdout.write(f"  {key} = {value!r}: {text}\n")
        return 0 if args else 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        result = run(args[0], args[1:])
    except DSPyLiteError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if _is_main_process():
        sys.stdout.write(
            json.dumps({"adapter": result.name, "path": result.path, "metrics": result.metrics}, default=str)
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
