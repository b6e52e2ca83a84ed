"""The one server schema: how vLLM is run, for every job's ``server:`` section, ``dspylite serve`` and
``dspylite doctor``.

    server:                      # in any job config, and in configs/serve.yaml
      dtype: auto                # picked for the hardware (serving/dtype.py)
      max_lora_rank: 16
      devices: "0,1"
      tensor_parallel_size: 2

The model is not part of it: jobs and ``dspylite serve`` name it once at the top level (``model:``),
and ``serving.setup`` resolves it through ``sources.models``. ``serving.setup`` turns a ``ServerConfig``
into a running server (or a connection to ``api_base``); nothing else reads these fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dspylite.config_io import field_help
from dspylite.errors import ConfigError


@dataclass
class ServerConfig:
    api_base: str | list[str] = field(
        default="",
        metadata=field_help(
            "Running OpenAI-compatible server(s) (http://host:port/v1, vLLM with LoRA enabled for weight "
            "jobs) that jobs use instead of starting one: a URL, or several (a YAML list, or comma-separated "
            "on the command line) serving the same model, e.g. on other machines that see the same adapter "
            "directory; requests go round-robin and every adapter version is loaded on each. Empty: start "
            "vLLM on `model` here (server.replicas of them) and stop it at the end. `dspylite serve` always "
            "starts one (keep it empty there)."
        ),
    )
    replicas: int = field(
        default=1,
        metadata=field_help(
            "vLLM servers a job starts here (empty api_base), each on its own port and, on GPUs, its own "
            "tensor_parallel_size GPUs of server.devices; they form one backend: requests go round-robin, "
            "every adapter version is loaded on each. The way to data-parallel serving with runtime LoRA."
        ),
    )
    api_key: str | None = field(
        default=None,
        metadata=field_help(
            "Bearer token the server requires on /v1 (or env DSPYLITE_API_KEY). Never written to the run "
            "directory; a vLLM started here gets it through its environment, not its command line."
        ),
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto",
        metadata=field_help(
            "Serving precision of a server started here: auto (bf16 on GPUs, and on AVX512-BF16/AMX CPUs for "
            "models of at least 30M parameters; else fp32: measured in README), or a fixed one. Adapter "
            "metadata records it next to the training precision."
        ),
    )
    host: str = field(
        default="127.0.0.1",
        metadata=field_help("Interface a server started here binds; 0.0.0.0 exposes it on the network."),
    )
    port: int | None = field(default=None, metadata=field_help("TCP port; null: a free one."))
    served_model_name: str | None = field(
        default=None,
        metadata=field_help("Name clients send as 'model' for the base model; null: its directory path."),
    )
    max_lora_rank: int = field(
        default=16, metadata=field_help("Largest LoRA rank the server accepts (--max-lora-rank).")
    )
    max_loras: int = field(
        default=4, metadata=field_help("Adapters that can be active in one batch (--max-loras).")
    )
    adapters: dict[str, str] = field(
        default_factory=dict,
        metadata=field_help(
            "LoRA adapters served from the start, name -> adapter directory (a program bound to them can "
            "then be loaded). On the command line: server.adapters.NAME=PATH."
        ),
    )
    devices: str = field(
        default="",
        metadata=field_help(
            "GPU indices for the vLLM server, e.g. '0' or '0,1' (its CUDA_VISIBLE_DEVICES); empty: all "
            "visible. Must list replicas x tensor_parallel_size GPUs (the first tensor_parallel_size go to the "
            "first replica, and so on)."
        ),
    )
    train_devices: str = field(
        default="",
        metadata=field_help(
            "GPU indices for a job's training (the trainer's CUDA_VISIBLE_DEVICES); empty: all visible. "
            "Disjoint from devices means no sharing (colocate is then off)."
        ),
    )
    tensor_parallel_size: int = field(
        default=1, metadata=field_help("vLLM --tensor-parallel-size: GPUs one model replica is split over.")
    )
    data_parallel_size: int = field(
        default=1,
        metadata=field_help(
            "vLLM --data-parallel-size. Only 1: vLLM's runtime LoRA loading reaches one data-parallel "
            "replica, and every server started here loads adapter versions at runtime; use server.replicas."
        ),
    )
    colocate: Literal["auto", "sleep", "split", "off"] = field(
        default="auto",
        metadata=field_help(
            "How vLLM and a job's training share a GPU: sleep puts vLLM to sleep (level 1) around each "
            "training phase; split starts vLLM with a --gpu-memory-utilization that leaves training its "
            "estimated share (serving.memory.TRAINING_BATCH_SIZE x TRAINING_SEQ_LEN tokens); auto picks sleep "
            "(split where vLLM has no sleep mode) when a job trains on the server's GPU and logs it; off "
            "arranges nothing (an error on a GPU training shares, unless gpu_memory_utilization sizes vLLM). "
            "Always off on CPU and on separate GPUs."
        ),
    )
    gpu_memory_utilization: float | None = field(
        default=None,
        metadata=field_help(
            "Fraction of each GPU vLLM may take (--gpu-memory-utilization); null: vLLM's 0.9, or computed "
            "when colocate=split."
        ),
    )
    startup_timeout: float = field(
        default=300.0, metadata=field_help("Seconds to wait for vLLM to become healthy.")
    )
    extra_args: list[str] = field(
        default_factory=list,
        metadata=field_help(
            "Further vLLM flags for a server started here, passed unchanged, e.g. ['--max-model-len', '8192']."
        ),
    )

    def __post_init__(self) -> None:
        self.api_base = _api_bases(self.api_base)
        for key in (
            "max_lora_rank",
            "max_loras",
            "startup_timeout",
            "tensor_parallel_size",
            "data_parallel_size",
        ):
            value = getattr(self, key)
            if value <= 0:
                raise ConfigError(f"server.{key} must be > 0, got {value}")
        if self.replicas < 1:
            raise ConfigError(
                f"server.replicas must be >= 1 (vLLM servers started here), got {self.replicas}"
            )
        if self.replicas > 1 and self.api_base:
            raise ConfigError(
                f"server.replicas={self.replicas} starts servers here, but server.api_base names running ones "
                f"({self.api_base}): give one or the other (list every running server in server.api_base)"
            )
        check_data_parallel(self.data_parallel_size, self.extra_args)
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"server.port must be in 1..65535 (or null for a free one), got {self.port}")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(
                f"server.gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        if not str(self.host).strip():
            raise ValueError("server.host is empty: give an interface, e.g. 127.0.0.1 or 0.0.0.0")

    @property
    def api_bases(self) -> list[str]:
        """``api_base`` as a list of URLs (empty: start servers here)."""
        if isinstance(self.api_base, list):
            return list(self.api_base)
        return [self.api_base] if self.api_base else []

    def check_lora_ranks(self, **ranks: int) -> None:
        """Refuse LoRA sections whose rank this server would not load, by section: ``sft=16, grpo=32``."""
        for section, rank in ranks.items():
            if rank > self.max_lora_rank:
                raise ValueError(f"{section}.lora.r={rank} exceeds server.max_lora_rank={self.max_lora_rank}")


def _api_bases(value: str | list[str]) -> str | list[str]:
    """One URL stays a string; a comma-separated string (``server.api_base=URL1,URL2``) or a YAML list of
    several becomes a list of URLs; an empty list is refused (empty string: start servers here)."""
    if isinstance(value, str):
        if "," not in value:
            return value.strip()
        value = value.split(",")
    urls = [str(url).strip() for url in value]
    if not urls or not all(urls):
        raise ConfigError(
            f"server.api_base={value!r} has an empty entry or is an empty list: give one URL or several "
            "(http://host:port/v1), or leave it empty ('') to start vLLM here"
        )
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"server.api_base entry {url!r} must start with http:// or https://")
    if len(set(urls)) != len(urls):
        raise ConfigError(f"server.api_base lists a server twice: {urls}")
    return urls[0] if len(urls) == 1 else urls


# vLLM's spellings of the data-parallel flag in extra_args.
_DP_FLAGS = ("--data-parallel-size", "-dp")


def check_data_parallel(data_parallel_size: int, extra_args: list[str] | tuple[str, ...] = ()) -> None:
    """Refuse vLLM data parallelism: every server dspylite starts loads adapter versions at runtime
    (/v1/load_lora_adapter), and vLLM's runtime LoRA loading reaches only one data-parallel replica, so
    the others would answer a version's requests without it. Separate servers (server.replicas) each
    load every version."""
    sizes = {"server.data_parallel_size": data_parallel_size}
    args = list(extra_args)
    for i, arg in enumerate(args):
        for flag in _DP_FLAGS:
            if arg == flag and i + 1 < len(args):
                sizes[f"server.extra_args {flag}"] = _int_or(args[i + 1])
            elif arg.startswith(flag + "="):
                sizes[f"server.extra_args {flag}"] = _int_or(arg.split("=", 1)[1])
    for where, size in sizes.items():
        if size != 1:
            raise ConfigError(
                f"{where}={size}: vLLM data parallelism cannot serve runtime-loaded LoRA adapters (loading "
                f"one reaches a single data-parallel replica), and every server dspylite starts loads its "
                f"adapter versions at runtime; use server.replicas={size} instead (that many separate vLLM "
                "servers, each loading every version)"
            )


def _int_or(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text
