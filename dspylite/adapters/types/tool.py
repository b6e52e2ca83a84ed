"""``dspy.Tool``, ``dspy.ToolCalls`` and ``dspy.ToolCallResults``: functions an LM may call.

Ported from DSPy 3.3.1 (MIT License); see THIRD_PARTY_NOTICES.md. ``Tool`` wraps a typed Python
function (name, description and a JSON schema per argument, inferred from the function); calls are
checked and their arguments coerced to the annotated types. ``ToolCalls`` is an output type: the
calls a model asked for, parsed from its text or taken from a native ``tool_calls`` response.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any, get_origin, get_type_hints

import pydantic
from pydantic import BaseModel, TypeAdapter, create_model

from dspylite.adapters.types.base_type import Type
from dspylite.errors import ToolError
from dspylite.utils import lenient_json
from dspylite.utils.callback import with_callbacks

_TYPE_MAPPING = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "array": list,
    "object": dict,
}


class Tool(Type):
    """``Tool(func)``; ``name``, ``desc``, ``args`` (arg -> JSON schema) and ``arg_types`` are inferred
    from the function unless given. Calling the tool validates the arguments (``ToolError``, a
    ``ValueError``, names the one at fault) and runs the function."""

    func: Callable
    name: str | None = None
    desc: str | None = None
    args: dict[str, Any] | None = None
    arg_types: dict[str, Any] | None = None
    arg_desc: dict[str, str] | None = None
    has_kwargs: bool = False

    def __init__(
        self,
        func: Callable,
        name: str | None = None,
        desc: str | None = None,
        args: dict[str, Any] | None = None,
        arg_types: dict[str, Any] | None = None,
        arg_desc: dict[str, str] | None = None,
    ):
        super().__init__(func=func, name=name, desc=desc, args=args, arg_types=arg_types, arg_desc=arg_desc)
        self._parse_function(func, arg_desc)

    def _parse_function(self, func: Callable, arg_desc: dict[str, str] | None = None) -> None:
        annotations_func = func if inspect.isfunction(func) or inspect.ismethod(func) else func.__call__
        name = getattr(func, "__name__", type(func).__name__)
        desc = getattr(func, "__doc__", None) or getattr(annotations_func, "__doc__", "")
        args: dict[str, Any] = {}
        arg_types: dict[str, Any] = {}
        sig = inspect.signature(annotations_func)
        try:
            available_hints = get_type_hints(annotations_func)
        except Exception:  # unresolvable forward references: the arguments are untyped
            available_hints = {}
        hints = {param_name: available_hints.get(param_name, Any) for param_name in sig.parameters}
        default_values = {param_name: sig.parameters[param_name].default for param_name in sig.parameters}
        for k, v in hints.items():
            arg_types[k] = v
            origin = get_origin(v) or v
            if isinstance(origin, type) and issubclass(origin, BaseModel):
                args[k] = _resolve_json_schema_reference(v.model_json_schema())
            else:
                args[k] = _resolve_json_schema_reference(TypeAdapter(v).json_schema())
            if default_values[k] is not inspect.Parameter.empty:
                args[k]["default"] = default_values[k]
            if arg_desc and k in arg_desc:
                args[k]["description"] = arg_desc[k]
        self.name = self.name or name
        self.desc = self.desc or desc
        self.args = self.args if self.args is not None else args
        self.arg_types = self.arg_types if self.arg_types is not None else arg_types
        self.has_kwargs = any(param.kind == param.VAR_KEYWORD for param in sig.parameters.values())

    def _validate_and_parse_args(self, **kwargs: Any) -> dict[str, Any]:
        for k, v in kwargs.items():
            if k not in self.args:
                if self.has_kwargs:
                    continue
                raise ToolError(f"Arg {k} is not in the tool's args.")
            schema = self.args[k]
            if k not in (self.arg_types or {}) and schema.get("type") not in (None, "Any"):
                _validate_against_schema(k, v.model_dump() if hasattr(v, "model_dump") else v, schema)
        parsed_kwargs = {}
        for k, v in kwargs.items():
            if k in (self.arg_types or {}) and self.arg_types[k] != Any:
                # A wrapper model parses nested types such as list[list[MyModel]].
                wrapper = create_model("Wrapper", value=(self.arg_types[k], ...))
                try:
                    parsed_kwargs[k] = wrapper.model_validate({"value": v}).value
                except pydantic.ValidationError as exc:
                    raise ToolError(f"Arg {k} is invalid: {_first_error(exc)}") from None
            else:
                parsed_kwargs[k] = v
        return parsed_kwargs

    def format(self):
        return str(self)

    def format_as_litellm_function_call(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry for this tool."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.desc,
                "parameters": {
                    "type": "object",
                    "properties": self.args,
                    "required": [k for k in self.args if "default" not in self.args[k]],
                },
            },
        }

    def _run_async_in_sync(self, coroutine):
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            return asyncio.run(coroutine)
        return loop.run_until_complete(coroutine)

    @with_callbacks
    def __call__(self, **kwargs: Any) -> Any:
        from dspylite import settings

        parsed_kwargs = self._validate_and_parse_args(**kwargs)
        result = self.func(**parsed_kwargs)
        if asyncio.iscoroutine(result):
            if settings.current().allow_tool_async_sync_conversion:
                return self._run_async_in_sync(result)
            result.close()
            raise ValueError(
                "You are calling `__call__` on an async tool, please use `acall` instead or enable "
                "async-to-sync conversion with `dspy.configure(allow_tool_async_sync_conversion=True)` "
                "or `with dspy.context(allow_tool_async_sync_conversion=True):`."
            )
        return result

    @with_callbacks
    async def acall(self, **kwargs: Any) -> Any:
        parsed_kwargs = self._validate_and_parse_args(**kwargs)
        result = self.func(**parsed_kwargs)
        if asyncio.iscoroutine(result):
            return await result
        return result

    def __deepcopy__(self, memo: dict[int, Any]) -> Tool:
        return self  # a tool is configuration (a function); program copies share it

    def __repr__(self):
        return f"Tool(name={self.name}, desc={self.desc}, args={self.args})"

    def __str__(self):
        desc = f", whose description is <desc>{self.desc}</desc>.".replace("\n", "  ") if self.desc else "."
        arg_desc = f"It takes arguments {self.args}."
        return f"{self.name}{desc} {arg_desc}"


class ToolCalls(Type):
    class ToolCall(Type):
        id: str | None = None
        name: str
        args: dict[str, Any] = pydantic.Field(json_schema_extra={"additionalProperties": True})

        @classmethod
        def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
            schema = super().__get_pydantic_json_schema__(core_schema, handler)
            schema = handler.resolve_ref_schema(schema)
            properties = schema.get("properties")
            if isinstance(properties, dict):
                properties.pop("id", None)
            required = schema.get("required")
            if isinstance(required, list):
                schema["required"] = [field for field in required if field != "id"]
            return schema

        def format(self):
            return {"name": self.name, "args": self.args}

        def execute(self, functions: dict[str, Any] | list[Tool] | None = None) -> Any:
            """Run this call with the matching function: from ``functions`` (a dict by name or a list
            of tools), else the caller's locals and globals."""
            func = None
            if functions is None:
                frame = inspect.currentframe().f_back
                try:
                    func = frame.f_locals.get(self.name) or frame.f_globals.get(self.name)
                finally:
                    del frame
            elif isinstance(functions, dict):
                func = functions.get(self.name)
            elif isinstance(functions, list):
                func = next((tool.func for tool in functions if tool.name == self.name), None)
            if func is None:
                raise ValueError(
                    f"Tool function '{self.name}' not found. Please pass the tool functions to the `execute` method."
                )
            try:
                return func(**(self.args or {}))
            except Exception as e:
                raise RuntimeError(f"Error executing tool '{self.name}': {e}") from e

    tool_calls: list[ToolCall]
    tool_call_results: Any | None = None

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema = super().__get_pydantic_json_schema__(core_schema, handler)
        schema = handler.resolve_ref_schema(schema)
        properties = schema.get("properties")
        if isinstance(properties, dict):
            properties.pop("tool_call_results", None)
        required = schema.get("required")
        if isinstance(required, list):
            schema["required"] = [field for field in required if field != "tool_call_results"]
        return schema

    @classmethod
    def from_dict_list(cls, tool_calls_dicts: list[dict[str, Any]]) -> ToolCalls:
        """``[{"name": "search", "args": {...}}, ...]`` (or OpenAI-shaped calls) as a ToolCalls."""
        return cls(tool_calls=[cls.ToolCall(**_normalize_tool_call_dict(item)) for item in tool_calls_dicts])

    @classmethod
    def description(cls) -> str:
        return (
            "Tool calls must be a JSON object with `tool_calls`, a list of calls. "
            "Each call must include `name` and `args`. "
            'Example: {"tool_calls": [{"name": "search", "args": {"query": "cats"}}]}'
        )

    def format(self) -> dict[str, Any]:
        return {"tool_calls": [tool_call.format() for tool_call in self.tool_calls]}

    @pydantic.model_serializer()
    def serialize_model(self):
        data = self.format()
        if self.tool_call_results is not None:
            data["tool_call_results"] = TypeAdapter(type(self.tool_call_results)).dump_python(
                self.tool_call_results, mode="json"
            )
        return data

    @pydantic.model_validator(mode="before")
    @classmethod
    def validate_input(cls, data: Any):
        if isinstance(data, cls):
            return data
        if isinstance(data, list) and all(
            isinstance(item, dict) and _is_tool_call_dict(item) for item in data
        ):
            return {"tool_calls": [cls.ToolCall(**_normalize_tool_call_dict(item)) for item in data]}
        if isinstance(data, dict):
            if "tool_calls" in data:
                tool_calls_data = data["tool_calls"]
                if isinstance(tool_calls_data, list):
                    normalized = {
                        "tool_calls": [
                            cls.ToolCall(**_normalize_tool_call_dict(item))
                            if isinstance(item, dict)
                            else item
                            for item in tool_calls_data
                        ]
                    }
                    if "tool_call_results" in data:
                        normalized["tool_call_results"] = data["tool_call_results"]
                    return normalized
            elif _is_tool_call_dict(data):
                return {"tool_calls": [cls.ToolCall(**_normalize_tool_call_dict(data))]}
        raise ValueError(f"Received invalid value for `dspy.ToolCalls`: {data}")


class ToolCallResults(pydantic.BaseModel):
    """The results of tool calls, to show the model in a later turn (native ``tool`` messages or text)."""

    class ToolCallResult(pydantic.BaseModel):
        call_id: str | None = None
        name: str
        value: Any
        is_error: bool = False

    tool_call_results: list[ToolCallResult]

    @classmethod
    def from_tool_calls_and_values(
        cls,
        tool_calls: list[ToolCalls.ToolCall] | ToolCalls,
        values: list[Any],
        is_errors: list[bool] | None = None,
    ) -> ToolCallResults:
        if isinstance(tool_calls, ToolCalls):
            tool_calls = tool_calls.tool_calls
        if len(tool_calls) != len(values):
            raise ValueError("`tool_calls` and `values` must have the same length.")
        if is_errors is None:
            is_errors = [False] * len(tool_calls)
        elif len(is_errors) != len(tool_calls):
            raise ValueError("`is_errors` must have the same length as `tool_calls` when provided.")
        return cls(
            tool_call_results=[
                cls.ToolCallResult(call_id=tool_call.id, name=tool_call.name, value=value, is_error=is_error)
                for tool_call, value, is_error in zip(tool_calls, values, is_errors, strict=True)
            ]
        )

    @pydantic.model_validator(mode="before")
    @classmethod
    def validate_input(cls, data: Any):
        if isinstance(data, cls):
            return data
        if isinstance(data, list):
            return {"tool_call_results": data}
        if isinstance(data, dict):
            if "tool_call_results" in data:
                return data
            if {"name", "value"}.issubset(data):
                return {"tool_call_results": [data]}
        raise ValueError(f"Received invalid value for `dspy.ToolCallResults`: {data}")


def _is_tool_call_dict(data: dict[str, Any]) -> bool:
    return ("name" in data and ("args" in data or "arguments" in data)) or "function" in data


def _normalize_tool_call_dict(data: dict[str, Any]) -> dict[str, Any]:
    """DSPy's ``{"name", "args"}`` or an OpenAI ``{"id", "function": {"name", "arguments"}}`` call."""
    if not isinstance(data, dict):
        raise ValueError(f"Received invalid tool call value for `dspy.ToolCalls`: {data}")
    if "function" in data:
        function = data.get("function") or {}
        if not isinstance(function, dict):
            raise ValueError(f"Received invalid function value for `dspy.ToolCalls`: {function}")
        arguments = function.get("arguments", {})
        name = function.get("name") or data.get("name")
    else:
        arguments = data.get("args", data.get("arguments", {}))
        name = data.get("name")
    if isinstance(arguments, str):
        arguments = lenient_json.loads(arguments)
    if not isinstance(arguments, dict):
        arguments = {}
    return {"id": data.get("id") or data.get("call_id"), "name": name, "args": arguments}


def _resolve_json_schema_reference(schema: dict) -> dict:
    """The schema with every ``$ref`` replaced by its definition (tool schemas are sent inline)."""
    if "$defs" not in schema and "definitions" not in schema:
        return schema

    def resolve_refs(obj: Any) -> Any:
        if isinstance(obj, dict):
            if "$ref" in obj:
                return resolve_refs(schema["$defs"][obj["$ref"].split("/")[-1]])
            return {k: resolve_refs(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [resolve_refs(item) for item in obj]
        return obj

    resolved = resolve_refs(schema)
    resolved.pop("$defs", None)
    return resolved


def _validate_against_schema(name: str, value: Any, schema: dict[str, Any]) -> None:
    """Check an argument of a schema-only tool (an MCP or LangChain tool) when jsonschema is installed."""
    try:
        from jsonschema import ValidationError, validate
    except ImportError:
        return
    try:
        validate(instance=value, schema=schema)
    except ValidationError as exc:
        raise ToolError(f"Arg {name} is invalid: {exc.message}") from None


def _first_error(exc: pydantic.ValidationError) -> str:
    errors = exc.errors()
    return errors[0]["msg"] if errors else str(exc)


def convert_input_schema_to_tool_args(
    schema: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """An input JSON schema (an MCP tool's) as ``(args, arg_types, arg_desc)`` for ``Tool``."""
    args: dict[str, Any] = {}
    arg_types: dict[str, Any] = {}
    arg_desc: dict[str, str] = {}
    properties = schema.get("properties", None)
    if properties is None:
        return args, arg_types, arg_desc
    required = schema.get("required", [])
    defs = schema.get("$defs", {})
    for name, prop in properties.items():
        if len(defs) > 0:
            prop = _resolve_json_schema_reference({"$defs": defs, **prop})
        args[name] = prop
        arg_types[name] = _TYPE_MAPPING.get(prop.get("type"), Any)
        arg_desc[name] = prop.get("description", "No description provided.")
        if name in required:
            arg_desc[name] += " (Required)"
    return args, arg_types, arg_desc


__all__ = ["Tool", "ToolCallResults", "ToolCalls", "convert_input_schema_to_tool_args"]
