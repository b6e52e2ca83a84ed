"""JSON adapter: DSPy's ``JSONAdapter``; the model answers with one JSON object of the output fields.

Ported from DSPy 3.3.1 (MIT License, Copyright (c) 2023 Stanford Future Data Systems); see
THIRD_PARTY_NOTICES.md. On an LM that takes a response schema (vLLM's guided decoding) the request
carries the outputs' JSON schema (``response_format``), so the server enforces it; on one that only
knows JSON mode it asks for ``{"type": "json_object"}``.
"""

from __future__ import annotations

import json
import logging
from typing import Any, get_origin

from dspylite.adapters.chat import ChatAdapter, FieldInfoWithName
from dspylite.adapters.utils import (
    apply_output_field_defaults,
    format_field_value,
    get_annotation_name,
    is_type,
    parse_value,
    serialize_for_json,
    translate_field_type,
)
from dspylite.errors import AdapterParseError, LMError, bounded_text
from dspylite.signatures import Signature
from dspylite.utils import lenient_json

logger = logging.getLogger(__name__)


def _has_open_ended_mapping(signature: type[Signature]) -> bool:
    """An output typed as an open mapping (``dict[str, Any]``): structured outputs need declared keys."""
    return any(get_origin(field.annotation) is dict for field in signature.output_fields.values())


class JSONAdapter(ChatAdapter):
    """DSPy's constructor (native function calling on by default). ``structured=False`` never sends a
    response schema, even to an LM that takes one."""

    name = "json"

    def __init__(
        self,
        callbacks: list | None = None,
        use_native_function_calling: bool = True,
        parallel_tool_calls: bool | None = None,
        *,
        structured: bool = True,
        fallback: Any = None,
    ):
        super().__init__(
            callbacks=callbacks,
            use_native_function_calling=use_native_function_calling,
            parallel_tool_calls=parallel_tool_calls,
            use_json_adapter_fallback=False,  # it is the fallback
            fallback=fallback,
        )
        self.structured = structured

    def _json_mode(self, lm: Any, lm_kwargs: dict[str, Any], signature: type[Signature]) -> bool | None:
        """None: send no response format; True: JSON mode; False: the outputs' JSON schema."""
        if "response_format" not in getattr(lm, "supported_params", set()):
            return None
        has_tool_calls = any(
            is_type(field.annotation, "ToolCalls") for field in signature.output_fields.values()
        )
        return (
            not self.structured
            or _has_open_ended_mapping(signature)
            or (not self.use_native_function_calling and has_tool_calls)
            or not getattr(lm, "supports_response_schema", False)
        )

    def __call__(self, lm, lm_kwargs, signature, demos, inputs):
        json_mode = self._json_mode(lm, lm_kwargs, signature)
        if json_mode is None:
            return super().__call__(lm, lm_kwargs, signature, demos, inputs)
        if json_mode:
            lm_kwargs["response_format"] = {"type": "json_object"}
            return super().__call__(lm, lm_kwargs, signature, demos, inputs)
        try:
            response_format = _get_structured_outputs_response_format(
                signature, self.use_native_function_calling
            )
        except (LMError, AdapterParseError):
            raise
        except Exception as exc:
            logger.warning("Failed to use structured output format (%s), falling back to JSON mode.", exc)
            lm_kwargs["response_format"] = {"type": "json_object"}
            return super().__call__(lm, lm_kwargs, signature, demos, inputs)
        lm_kwargs["response_format"] = response_format
        return super().__call__(lm, lm_kwargs, signature, demos, inputs)

    async def acall(self, lm, lm_kwargs, signature, demos, inputs):
        json_mode = self._json_mode(lm, lm_kwargs, signature)
        if json_mode is None:
            return await super().acall(lm, lm_kwargs, signature, demos, inputs)
        if json_mode:
            lm_kwargs["response_format"] = {"type": "json_object"}
            return await super().acall(lm, lm_kwargs, signature, demos, inputs)
        try:
            response_format = _get_structured_outputs_response_format(
                signature, self.use_native_function_calling
            )
        except Exception as exc:
            logger.warning("Failed to use structured output format (%s), falling back to JSON mode.", exc)
            lm_kwargs["response_format"] = {"type": "json_object"}
            return await super().acall(lm, lm_kwargs, signature, demos, inputs)
        lm_kwargs["response_format"] = response_format
        return await super().acall(lm, lm_kwargs, signature, demos, inputs)

    def format_field_structure(self, signature: type[Signature]) -> str:
        parts = [
            "All interactions will be structured in the following way, with the appropriate values filled in."
        ]

        def format_signature_fields_for_instructions(fields, role: str):
            return self.format_field_with_value(
                fields_with_values={
                    FieldInfoWithName(name=field_name, info=field_info): translate_field_type(
                        field_name, field_info
                    )
                    for field_name, field_info in fields.items()
                },
                role=role,
            )

        parts.append("Inputs will have the following structure:")
        parts.append(format_signature_fields_for_instructions(signature.input_fields, role="user"))
        parts.append("Outputs will be a JSON object with the following fields.")
        parts.append(format_signature_fields_for_instructions(signature.output_fields, role="assistant"))
        return "\n\n".join(parts).strip()

    def user_message_output_requirements(self, signature: type[Signature]) -> str:
        def type_info(v):
            if is_type(v.annotation, "ToolCalls"):
                return ' (must be a JSON object like {"tool_calls": [{"name": "...", "args": {...}}]})'
            return (
                f" (must be formatted as a valid Python {get_annotation_name(v.annotation)})"
                if v.annotation is not str
                else ""
            )

        message = "Respond with a JSON object in the following order of fields: "
        message += ", then ".join(f"`{f}`{type_info(v)}" for f, v in signature.output_fields.items())
        return message + "."

    def format_assistant_message_content(
        self,
        signature: type[Signature],
        outputs: dict[str, Any],
        missing_field_message: str | None = None,
    ) -> str:
        fields_with_values = {
            FieldInfoWithName(name=k, info=v): outputs.get(k, missing_field_message)
            for k, v in signature.output_fields.items()
        }
        return self.format_field_with_value(fields_with_values, role="assistant")

    def parse(self, signature: type[Signature], completion: str) -> dict[str, Any]:
        fields = lenient_json.loads(completion)
        if not isinstance(fields, dict):
            raise AdapterParseError(
                adapter_name="JSONAdapter",
                adapter=self.name,
                signature=signature,
                lm_response=completion,
                message="LM response cannot be serialized to a JSON object.",
            )
        fields = {k: v for k, v in fields.items() if k in signature.output_fields}
        for k, v in fields.items():
            try:
                fields[k] = parse_value(v, signature.output_fields[k].annotation)
            except Exception as e:
                raise AdapterParseError(
                    adapter_name="JSONAdapter",
                    adapter=self.name,
                    signature=signature,
                    lm_response=completion,
                    message=f"Failed to parse field {k} with value {bounded_text(repr(v), 200)} from the LM response. Error message: {bounded_text(e, 300)}",
                ) from None
        fields = apply_output_field_defaults(signature, fields)
        if fields.keys() != signature.output_fields.keys():
            raise AdapterParseError(
                adapter_name="JSONAdapter",
                adapter=self.name,
                signature=signature,
                lm_response=completion,
                parsed_result=fields,
            )
        return fields

    def format_field_with_value(
        self, fields_with_values: dict[FieldInfoWithName, Any], role: str = "user"
    ) -> str:
        """Inputs under ``[[ ## name ## ]]`` headers (``role="user"``); outputs as one JSON object."""
        if role == "user":
            output = []
            for field, field_value in fields_with_values.items():
                formatted_field_value = format_field_value(field_info=field.info, value=field_value)
                output.append(f"[[ ## {field.name} ## ]]\n{formatted_field_value}")
            return "\n\n".join(output).strip()
        d = {k.name: v for k, v in fields_with_values.items()}
        return json.dumps(serialize_for_json(d), indent=2, ensure_ascii=False)

    def format_finetune_data(self, signature, demos, inputs, outputs):
        raise NotImplementedError(
            "JSONAdapter.format_finetune_data: fine-tune through the ChatAdapter format"
        )


def _get_structured_outputs_response_format(
    signature: type[Signature], use_native_function_calling: bool = True
) -> type:
    """A pydantic model of the output fields whose JSON schema meets OpenAI's structured outputs
    rules (every object lists all its properties as required, no additional properties). An open
    mapping (``dict[str, Any]``) cannot meet them: that raises, and the caller uses JSON mode."""
    import pydantic

    for name, field in signature.output_fields.items():
        if get_origin(field.annotation) is dict:
            raise ValueError(
                f"Field '{name}' has an open-ended mapping type which is not supported by Structured Outputs."
            )
    fields = {}
    for name, field in signature.output_fields.items():
        if use_native_function_calling and is_type(field.annotation, "ToolCalls"):
            continue  # tool calls come natively, not in the JSON
        default = ... if field.is_required() else field.get_default(call_default_factory=True)
        fields[name] = (field.annotation, default)
    pydantic_model = pydantic.create_model(
        "DSPyProgramOutputs", __config__=pydantic.ConfigDict(extra="forbid"), **fields
    )
    schema = pydantic_model.model_json_schema()
    for prop in schema.get("properties", {}).values():
        prop.pop("json_schema_extra", None)

    def enforce_required(schema_part: dict) -> None:
        if schema_part.get("type") == "object":
            props = schema_part.get("properties")
            if props is not None:
                schema_part["required"] = list(props.keys())
                schema_part["additionalProperties"] = False
                for sub_schema in props.values():
                    if isinstance(sub_schema, dict):
                        enforce_required(sub_schema)
            else:
                schema_part["properties"] = {}
                schema_part["required"] = []
                schema_part["additionalProperties"] = False
        if schema_part.get("type") == "array" and isinstance(schema_part.get("items"), dict):
            enforce_required(schema_part["items"])
        for key in ("$defs", "definitions"):
            if key in schema_part:
                for def_schema in schema_part[key].values():
                    enforce_required(def_schema)

    enforce_required(schema)
    pydantic_model.model_json_schema = lambda *args, **kwargs: schema
    return pydantic_model


def response_format_body(response_format: Any) -> Any:
    """``response_format`` as an OpenAI-compatible server takes it: a pydantic model class (as DSPy
    passes it, and LiteLLM converts it) becomes ``{"type": "json_schema", "json_schema": {...}}``."""
    schema_of = getattr(response_format, "model_json_schema", None)
    if not isinstance(response_format, type) or schema_of is None:
        return response_format
    return {
        "type": "json_schema",
        "json_schema": {"name": response_format.__name__, "schema": schema_of(), "strict": True},
    }


__all__ = ["JSONAdapter", "response_format_body"]
