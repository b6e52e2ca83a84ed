"""A run directory: config, metrics.jsonl, checkpoints, adapters, program.json and a report.

Every job writes one. Files are written atomically; metrics are appended and fsync'd, so a killed
run leaves everything it finished on disk and ``RunDir(path)`` picks it up to resume.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from dspylite.utils.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl

logger = logging.getLogger(__name__)


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def new(cls, base: str | Path = "runs", name: str | None = None) -> RunDir:
        name = name or time.strftime("%Y%m%d-%H%M%S")
        return cls(Path(base) / name)

    # ---- well-known paths ---------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def program_path(self) -> Path:
        return self.path / "program.json"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def adapters_dir(self) -> Path:
        return self.path / "adapters"

    @property
    def report_md(self) -> Path:
        return self.path / "report.md"

    @property
    def report_png(self) -> Path:
        return self.path / "report.png"

    # ---- writing ---------------------------------------------------------------------------------------
    def write_config(self, config: Any) -> Path:
        import yaml

        from dspylite.config_io import to_dict

        data = to_dict(config) if not isinstance(config, dict) else config
        return atomic_write_text(self.config_path, yaml.safe_dump(data, sort_keys=False))

    def log_metrics(self, step: int | None = None, **metrics: Any) -> None:
        row = {"time": time.time(), **({"step": step} if step is not None else {}), **metrics}
        append_jsonl(self.metrics_path, row)

    def metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics_path)

    def save_json(self, name: str, data: Any) -> Path:
        return atomic_write_json(self.path / name, data)

    def load_json(self, name: str, default: Any = None) -> Any:
        import json

        path = self.path / name
        if not path.exists():
            return default
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            logger.warning("run file %s is corrupt; ignoring it", path)
            return default

    def write_report(self, title: str, sections: list[tuple[str, str]], *, figure: Any = None) -> Path:
        """``sections`` are (heading, markdown body) pairs; ``figure`` a matplotlib Figure saved as report.png."""
        parts = [f"# {title}", ""]
        for heading, body in sections:
            parts += [f"## {heading}", "", body.rstrip(), ""]
        if figure is not None:
            figure.savefig(self.report_png, dpi=110, bbox_inches="tight")
            parts += ["![report](report.png)", ""]
        return atomic_write_text(self.report_md, "\n".join(parts))
