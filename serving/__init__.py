"""Running models: the vLLM server lifecycle, runtime LoRA adapters, the adapter registry, binding, and
the ``Backend`` weight optimizers train and publish through (serving/backend.py).

    from serving import VLLMServer, AdapterRegistry, bind

    with VLLMServer("models/tiny", log_dir="runs/demo") as server:
        server.load_adapter("sft-1", "runs/demo/adapters/sft-1")
        program = bind(program, "sft-1", lm=server.lm())

Importing this package never imports vLLM or torch: the server is a child process.
"""

from __future__ import annotations

from serving.adapter_files import AdapterInfo, read_adapter
from serving.adapters import list_models, load_adapter, unload_adapter
from serving.backend import Backend
from serving.binding import bind, bindings, unbind
from serving.connection import VLLMConnection, connect
from serving.dtype import serving_dtype
from serving.registry import AdapterEntry, AdapterRegistry
from serving.server import VLLMServer, vllm_flavor

__all__ = [
    "AdapterEntry",
    "AdapterInfo",
    "AdapterRegistry",
    "Backend",
    "VLLMConnection",
    "VLLMServer",
    "bind",
    "bindings",
    "connect",
    "list_models",
    "load_adapter",
    "read_adapter",
    "serving_dtype",
    "unbind",
    "unload_adapter",
    "vllm_flavor",
]
