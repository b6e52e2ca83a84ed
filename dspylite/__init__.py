"""dspylite: program local LMs the DSPy way, then improve them with prompts and LoRA weights.

``import dspylite as dspy`` gives the common DSPy surface. Names are resolved lazily so that the
import stays fast and never pulls in torch, transformers, trl or vllm.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dspylite.optimizers.table import OPTIMIZERS

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # programs
    "Signature": "dspylite.signatures",
    "InputField": "dspylite.signatures",
    "OutputField": "dspylite.signatures",
    "make_signature": "dspylite.signatures",
    "ensure_signature": "dspylite.signatures",
    "infer_prefix": "dspylite.signatures",
    "SignatureMeta": "dspylite.signatures",
    "History": "dspylite.adapters.types",
    "Image": "dspylite.adapters.types",
    "Audio": "dspylite.adapters.types",
    "File": "dspylite.adapters.types",
    "Code": "dspylite.adapters.types",
    "Reasoning": "dspylite.adapters.types",
    "Type": "dspylite.adapters.types",
    "ToolCalls": "dspylite.adapters.types",
    "ToolCallResults": "dspylite.adapters.types",
    "Completions": "dspylite.example",
    "Example": "dspylite.example",
    "Prediction": "dspylite.example",
    "Module": "dspylite.modules.module",
    "Predict": "dspylite.modules.predict",
    "ChainOfThought": "dspylite.modules.chain_of_thought",
    "ReAct": "dspylite.modules.react",
    "Tool": "dspylite.adapters.types",
    "BestOfN": "dspylite.modules.best_of_n",
    "Refine": "dspylite.modules.best_of_n",
    "Parallel": "dspylite.modules.parallel",
    "majority": "dspylite.modules.aggregation",
    # adapters and LMs
    "Adapter": "dspylite.adapters.base",
    "ChatAdapter": "dspylite.adapters.chat",
    "JSONAdapter": "dspylite.adapters.json_adapter",
    "XMLAdapter": "dspylite.adapters.xml_adapter",
    "LM": "dspylite.lm",
    "BaseLM": "dspylite.clients.base_lm",
    "inspect_history": "dspylite.utils.inspect_history",
    "track_usage": "dspylite.utils.usage_tracker",
    "asyncify": "dspylite.utils.asyncify",
    "syncify": "dspylite.utils.asyncify",
    "load": "dspylite.utils.saving",
    "Completion": "dspylite.completion",
    # settings and traces
    "configure": "dspylite.settings",
    "context": "dspylite.settings",
    "settings": "dspylite.settings",
    "load_settings": "dspylite.settings",
    "TraceRecord": "dspylite.trace",
    "capture_traces": "dspylite.trace",
    "install_dspy_alias": "dspylite.dspy_alias",
    # evaluation
    "Evaluate": "dspylite.evaluate",
    "EvaluationResult": "dspylite.evaluate",
    # optimizers (each one of dspylite.optimizers.table, added below)
    "Teleprompter": "dspylite.teleprompt.teleprompt",
    # errors
    "AdapterParseError": "dspylite.errors",
    "LMError": "dspylite.errors",
    "LMConnectionError": "dspylite.errors",
    "LMRequestError": "dspylite.errors",
    "LMServerError": "dspylite.errors",
    "LMCache": "dspylite.cache",
    "DSPyLiteError": "dspylite.errors",
    "ProgramStateError": "dspylite.errors",
    "EvaluationError": "dspylite.errors",
    "ToolError": "dspylite.errors",
    "ContextWindowExceededError": "dspylite.errors",
    **{spec.name: spec.module for spec in OPTIMIZERS},
}

_SUBMODULES = {
    "utils",
    "datasets",
    "errors",
    "evaluate",
    "optimizers",
    "adapters",
    "modules",
    "trace",
    # DSPy's package layout
    "teleprompt",
    "predict",
    "primitives",
    "clients",
    "signatures",
    "experimental",
}

__all__ = sorted(_EXPORTS) + sorted(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"dspylite.{name}")
    raise AttributeError(f"module 'dspylite' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # for type checkers and IDEs
    from dspylite.adapters.base import Adapter  # noqa: F401
    from dspylite.adapters.chat import ChatAdapter  # noqa: F401
    from dspylite.adapters.json_adapter import JSONAdapter  # noqa: F401
    from dspylite.completion import Completion  # noqa: F401
    from dspylite.errors import AdapterParseError, DSPyLiteError  # noqa: F401
    from dspylite.evaluate import Evaluate, EvaluationResult  # noqa: F401
    from dspylite.example import Example, Prediction  # noqa: F401
    from dspylite.lm import LM  # noqa: F401
    from dspylite.modules.chain_of_thought import ChainOfThought  # noqa: F401
    from dspylite.modules.module import Module  # noqa: F401
    from dspylite.modules.predict import Predict  # noqa: F401
    from dspylite.settings import configure, context, settings  # noqa: F401
    from dspylite.signatures import InputField, OutputField, Signature, ensure_signature, make_signature  # noqa: F401
    from dspylite.trace import TraceRecord, capture_traces  # noqa: F401
