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


@dataclass
class ServerConfig:
    api_base: str = field(
        default="",
        metadata=field_help(
            "A running OpenAI-compatible server (http://host:port/v1, vLLM with LoRA enabled for weight "
            "jobs) that jobs use instead of starting one; empty: start vLLM on `model` here and stop it at the "
            "end. `dspylite serve` always starts one (keep it empty there)."
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
            "visible. Must list tensor_parallel_size x data_parallel_size GPUs."
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
        default=1, metadata=field_help("vLLM --data-parallel-size: replicas sharing the load.")
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
        for key in (
            "max_lora_rank",
            "max_loras",
            "startup_timeout",
            "tensor_parallel_size",
            "data_parallel_size",
        ):
            value = getattr(self, key)
            if value <= 0:
                raise ValueError(f"server.{key} must be > 0, got {value}")
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"server.port must be in 1..65535 (or null for a free one), got {self.port}")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(
                f"server.gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        if not str(self.host).strip():
            raise ValueError("server.host is empty: give an interface, e.g. 127.0.0.1 or 0.0.0.0")

    def check_lora_ranks(self, **ranks: int) -> None:
        """Refuse LoRA sections whose rank this server would not load, by section: ``sft=16, grpo=32``."""
        for section, rank in ranks.items():
            if rank > self.max_lora_rank:
                raise ValueError(f"{section}.lora.r={rank} exceeds server.max_lora_rank={self.max_lora_rank}")
