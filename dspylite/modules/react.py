"""ReAct: a tool-using agent over any signature, in DSPy's shape.

Each step an inner ``Predict`` (named ``react``) sees the inputs and the trajectory so far and picks
``next_thought``, ``next_tool_name`` (one of the tools or ``finish``) and ``next_tool_args``. The tool
runs and its result (or its error) becomes the step's observation. After ``finish`` or ``max_iters``
steps, a ``ChainOfThought`` (named ``extract``) produces the signature's outputs from the trajectory.
The predictor names match DSPy's ReAct, so saved program states line up.
"""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import Callable
from typing import Any, Literal

from dspylite import settings as _settings
from dspylite.coerce import format_value, json_schema
from dspylite.errors import AdapterParseError, SignatureError, ToolError
from dspylite.example import Prediction
from dspylite.modules.chain_of_thought import ChainOfThought
from dspylite.modules.module import Module
from dspylite.modules.predict import _DEFAULT_ADAPTER, Predict
from dspylite.signatures import Field, InputField, OutputField, Signature, ensure_signature, make_signature

logger = logging.getLogger(__name__)

FINISH = "finish"


class Tool:
    """A plain Python function the agent may call.

    ``name`` defaults to the function's name, ``desc`` to its docstring, and ``args`` (name -> JSON
    schema) to its annotated parameters. Calls are checked against the parameters and the values
    coerced to the annotated types, so a model that writes ``{"n": "3"}`` for ``n: int`` still works,
    while unknown, missing or ill-typed arguments raise ``ToolError`` naming the argument.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        name: str | None = None,
        desc: str | None = None,
        args: dict[str, dict[str, Any]] | None = None,
        arg_desc: dict[str, str] | None = None,
    ):
        if not callable(func):
            raise TypeError(f"a tool must be callable, got {type(func).__name__}")
        self.func = func
        self.name = name or getattr(func, "__name__", type(func).__name__)
        self.desc = (desc if desc is not None else inspect.getdoc(func) or "").strip()
        self._types, self._required, defaults = _parameters(func)
        if args is not None:
            self.args = dict(args)
            self._types = {k: self._types.get(k, Any) for k in self.args}
            self._required = [k for k in self._required if k in self.args]
        else:
            self.args = {k: _arg_schema(t) for k, t in self._types.items()}
            for k, value in defaults.items():
                if value is None or isinstance(value, (str, int, float, bool)):
                    self.args[k]["default"] = value
        for arg, text in (arg_desc or {}).items():
            if arg not in self.args:
                raise ToolError(f"tool {self.name!r}: arg_desc names unknown argument {arg!r}")
            self.args[arg] = {**self.args[arg], "description": text}

    def __call__(self, **kwargs: Any) -> Any:
        unknown = sorted(set(kwargs) - set(self.args))
        if unknown:
            raise ToolError(
                f"tool {self.name!r} got unknown argument(s) {unknown}; it takes {list(self.args)}"
            )
        missing = [k for k in self._required if k not in kwargs]
        if missing:
            raise ToolError(f"tool {self.name!r} is missing argument(s) {missing}")
        return self.func(**{k: self._coerce(k, v) for k, v in kwargs.items()})

    def _coerce(self, arg: str, value: Any) -> Any:
        annotation = self._types.get(arg, Any)
        if annotation is Any:
            return value
        from dspylite.coerce import _adapter  # pydantic, loaded only when a typed tool is called

        try:
            return _adapter(annotation).validate_python(value)
        except Exception as exc:
            lines = str(exc).strip().splitlines()
            reason = lines[-1].strip() if lines else str(exc)
            raise ToolError(
                f"tool {self.name!r}: argument {arg!r}={value!r} is not a valid "
                f"{getattr(annotation, '__name__', annotation)} ({reason})"
            ) from None

    def __deepcopy__(self, memo: dict[int, Any]) -> Tool:
        return self  # a tool is configuration; program copies share it

    def __str__(self) -> str:
        desc = f", whose description is <desc>{self.desc}</desc>." if self.desc else "."
        return f"{self.name}{desc} It takes arguments {format_value(self.args)} in JSON format."

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r}, args={list(self.args)})"


class ReAct(Module):
    """``ReAct("question -> answer", tools=[search, lookup], max_iters=5)``; see the module docstring."""

    def __init__(
        self, signature: str | type[Signature], tools: list[Callable[..., Any] | Tool], max_iters: int = 5
    ):
        self.signature = signature = ensure_signature(signature)
        if max_iters < 1:
            raise ValueError(f"ReAct: max_iters must be >= 1, got {max_iters}")
        self.max_iters = max_iters
        tool_list = [t if isinstance(t, Tool) else Tool(t) for t in tools]
        names = [t.name for t in tool_list]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated or FINISH in names:
            raise ValueError(f"ReAct: tool names must be unique and not {FINISH!r}; got {names}")
        outputs = ", ".join(f"`{k}`" for k in signature.output_fields)
        finish = Tool(
            lambda: "Completed.",
            name=FINISH,
            args={},
            desc=f"Marks the task as complete: all information for producing {outputs} is now available.",
        )
        self.tools: dict[str, Tool] = {t.name: t for t in [*tool_list, finish]}

        self.react = Predict(self._react_signature(signature))
        extract_fields = {
            **_specs(signature.input_fields),
            "trajectory": (str, InputField()),
            **_specs(signature.output_fields),
        }
        self.extract = ChainOfThought(
            make_signature(extract_fields, signature.instructions, signature.__name__)
        )

    def _react_signature(self, signature: type[Signature]) -> type[Signature]:
        inputs = ", ".join(f"`{k}`" for k in signature.input_fields)
        outputs = ", ".join(f"`{k}`" for k in signature.output_fields)
        lines = [signature.instructions, ""] if signature.instructions else []
        lines += [
            f"You are an agent. You get the fields {inputs} as input, and you see your trajectory so far.",
            f"Use the tools below to collect the information needed to produce {outputs}.",
            "In each step, write next_thought, then pick next_tool_name and give next_tool_args as a JSON object.",
            "The tool's result is added to your trajectory as an observation.",
            f"When you have everything you need, pick {FINISH!r}. The tools are:",
        ]
        lines += [f"({i}) {tool}" for i, tool in enumerate(self.tools.values(), start=1)]
        tool_names = tuple(self.tools)
        fields = {
            **_specs(signature.input_fields),
            "trajectory": (str, InputField()),
            "next_thought": (str, OutputField()),
            "next_tool_name": (Literal[tool_names], OutputField()),  # type: ignore[valid-type]
            "next_tool_args": (dict[str, Any], OutputField()),
        }
        return make_signature(fields, "\n".join(lines), signature.__name__)

    def forward(self, **input_args: Any) -> Prediction:
        max_iters = input_args.pop("max_iters", self.max_iters)
        trajectory: dict[str, Any] = {}
        for idx in range(max_iters):
            try:
                step = self.react(**input_args, trajectory=self._format_trajectory(trajectory))
            except AdapterParseError as exc:
                # The failed call is already in the traces; the agent stops and answers with what it has.
                logger.warning("ReAct: step %d could not be parsed; ending the trajectory: %s", idx, exc)
                break
            trajectory[f"thought_{idx}"] = step.next_thought
            trajectory[f"tool_name_{idx}"] = step.next_tool_name
            trajectory[f"tool_args_{idx}"] = step.next_tool_args
            trajectory[f"observation_{idx}"] = self._run_tool(step.next_tool_name, step.next_tool_args)
            if step.next_tool_name == FINISH:
                break
        extracted = self.extract(**input_args, trajectory=self._format_trajectory(trajectory))
        return Prediction(trajectory=trajectory, **extracted.toDict())

    def _run_tool(self, name: str, args: dict[str, Any]) -> Any:
        try:
            return self.tools[name](**args)
        except Exception as exc:  # the agent sees its mistake and may recover on the next step
            return f"Execution error in {name}: {type(exc).__name__}: {exc}"

    def _format_trajectory(self, trajectory: dict[str, Any]) -> str:
        if not trajectory:
            return ""
        adapter = self.react.adapter or _settings.current().adapter or _DEFAULT_ADAPTER
        fields = make_signature({k: (Any, InputField()) for k in trajectory} | {"_": (str, OutputField())})
        return adapter.format_user(fields, trajectory, is_demo=True)


def _specs(fields: dict[str, Field]) -> dict[str, tuple[Any, Any]]:
    """A signature's fields in ``make_signature``'s dict form, keeping types, descriptions and prefixes."""
    out = {}
    for name, f in fields.items():
        spec = (
            InputField(desc=f.desc, prefix=f.prefix)
            if f.kind == "input"
            else OutputField(desc=f.desc, prefix=f.prefix)
        )
        out[name] = (f.annotation, spec)
    return out


def _parameters(func: Callable[..., Any]) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """Annotated types, required names and defaults of a function's named parameters."""
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return {}, [], {}
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable forward references: fall back to untyped
        hints = {}
    types: dict[str, Any] = {}
    required: list[str] = []
    defaults: dict[str, Any] = {}
    for name, p in params.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or name in ("self", "cls"):
            continue
        types[name] = hints.get(name, Any)
        if p.default is p.empty:
            required.append(name)
        else:
            defaults[name] = p.default
    return types, required, defaults


def _arg_schema(annotation: Any) -> dict[str, Any]:
    if annotation is Any:
        return {}
    try:
        schema = dict(json_schema(annotation))
    except Exception as exc:
        raise SignatureError(f"tool argument type {annotation!r} has no JSON schema: {exc}") from None
    schema.pop("title", None)
    return schema
