"""Chat adapter: DSPy's ``ChatAdapter`` format, fields delimited by ``[[ ## name ## ]]`` markers.

Ported from DSPy 3.3.1 (MIT License, Copyright (c) 2023 Stanford Future Data Systems); see
THIRD_PARTY_NOTICES.md. The prompts are DSPy's, word for word, so a program optimized with DSPy
sends the same messages here, and demos, traces and fine-tuning data look alike to the model.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any, NamedTuple

from dspylite.adapters.base import Adapter
from dspylite.adapters.utils import (
    apply_output_field_defaults,
    format_field_value,
    get_annotation_name,
    get_field_description_string,
    is_type,
    parse_value,
    translate_field_type,
)
from dspylite.errors import AdapterParseError, bounded_text
from dspylite.signatures import Signature

field_header_pattern = re.compile(r"\[\[ ## (\w+) ## \]\]")
COMPLETED = "[[ ## completed ## ]]"


def marker(name: str) -> str:
    return f"[[ ## {name} ## ]]"


class FieldInfoWithName(NamedTuple):
    name: str
    info: Any


class ChatAdapter(Adapter):
    """DSPy's constructor. ``use_json_adapter_fallback=True`` (DSPy's default) retries a completion
    that does not parse with a ``JSONAdapter``; each retry is counted in ``usage["fallbacks"]`` so a
    model that ignores the format still shows up in the metrics. ``fallback=`` names any other adapter."""

    name = "chat"

    def __init__(
        self,
        callbacks: list | None = None,
        use_native_function_calling: bool = False,
        native_response_types: list[type] | None = None,
        use_json_adapter_fallback: bool = True,
        parallel_tool_calls: bool | None = None,
        *,
        fallback: Adapter | None = None,
    ):
        if fallback is None and use_json_adapter_fallback:
            from dspylite.adapters.json_adapter import JSONAdapter

            fallback = JSONAdapter(
                use_native_function_calling=use_native_function_calling,
                parallel_tool_calls=parallel_tool_calls,
            )
        super().__init__(
            callbacks=callbacks,
            use_native_function_calling=use_native_function_calling,
            native_response_types=native_response_types,
            parallel_tool_calls=parallel_tool_calls,
            fallback=fallback,
        )
        self.use_json_adapter_fallback = use_json_adapter_fallback

    def format_field_description(self, signature: type[Signature]) -> str:
        return (
            f"Your input fields are:\n{get_field_description_string(signature.input_fields)}\n"
            f"Your output fields are:\n{get_field_description_string(signature.output_fields)}"
        )

    def format_field_structure(self, signature: type[Signature]) -> str:
        """Inputs and outputs each in their own section under a ``[[ ## name ## ]]`` header, the
        outputs closed by ``[[ ## completed ## ]]``."""
        parts = [
            "All interactions will be structured in the following way, with the appropriate values filled in."
        ]

        def format_signature_fields_for_instructions(fields):
            return self.format_field_with_value(
                fields_with_values={
                    FieldInfoWithName(name=field_name, info=field_info): translate_field_type(
                        field_name, field_info
                    )
                    for field_name, field_info in fields.items()
                },
            )

        parts.append(format_signature_fields_for_instructions(signature.input_fields))
        parts.append(format_signature_fields_for_instructions(signature.output_fields))
        parts.append(COMPLETED + "\n")
        return "\n\n".join(parts).strip()

    def format_task_description(self, signature: type[Signature]) -> str:
        instructions = textwrap.dedent(signature.instructions)
        objective = ("\n" + " " * 8).join([""] + instructions.splitlines())
        return f"In adhering to this structure, your objective is: {objective}"

    def format_user_message_content(
        self,
        signature: type[Signature],
        inputs: dict[str, Any],
        prefix: str = "",
        suffix: str = "",
        main_request: bool = False,
    ) -> str:
        messages = [prefix]
        for k, v in signature.input_fields.items():
            if k in inputs:
                formatted_field_value = format_field_value(field_info=v, value=inputs.get(k))
                messages.append(f"[[ ## {k} ## ]]\n{formatted_field_value}")
        if main_request:
            output_requirements = self.memo(
                signature, "output_requirements", lambda: self.user_message_output_requirements(signature)
            )
            if output_requirements is not None:
                messages.append(output_requirements)
        messages.append(suffix)
        return "\n\n".join(messages).strip()

    def user_message_output_requirements(self, signature: type[Signature]) -> str:
        """The short reminder of the output format at the end of the current user message."""

        def type_info(v):
            if is_type(v.annotation, "ToolCalls"):
                return ' (must be a JSON object like {"tool_calls": [{"name": "...", "args": {...}}]})'
            if v.annotation is not str:
                return f" (must be formatted as a valid Python {get_annotation_name(v.annotation)})"
            return ""

        message = "Respond with the corresponding output fields, starting with the field "
        message += ", then ".join(
            f"`[[ ## {f} ## ]]`{type_info(v)}" for f, v in signature.output_fields.items()
        )
        message += ", and then ending with the marker for `[[ ## completed ## ]]`."
        return message

    def format_assistant_message_content(
        self,
        signature: type[Signature],
        outputs: dict[str, Any],
        missing_field_message: str | None = None,
    ) -> str:
        assistant_message_content = self.format_field_with_value(
            {
                FieldInfoWithName(name=k, info=v): outputs.get(k, missing_field_message)
                for k, v in signature.output_fields.items()
            },
        )
        return assistant_message_content + "\n\n" + COMPLETED + "\n"

    def parse(self, signature: type[Signature], completion: str) -> dict[str, Any]:
        sections: list[tuple[str | None, list[str]]] = [(None, [])]
        for line in completion.splitlines():
            match = field_header_pattern.match(line.strip())
            if match:
                # The rest of a header line is the start of the field's content.
                header = match.group(1)
                remaining_content = line[match.end() :].strip()
                sections.append((header, [remaining_content] if remaining_content else []))
            else:
                sections[-1][1].append(line)
        joined = [(k, "\n".join(v).strip()) for k, v in sections]
        fields: dict[str, Any] = {}
        for k, v in joined:
            if (k not in fields) and (k in signature.output_fields):
                try:
                    fields[k] = parse_value(v, signature.output_fields[k].annotation)
                except Exception as e:
                    raise AdapterParseError(
                        adapter_name="ChatAdapter",
                        adapter=self.name,
                        signature=signature,
                        lm_response=completion,
                        message=f"Failed to parse field {k} with value {bounded_text(v, 200)} from the LM response. Error message: {bounded_text(e, 300)}",
                    ) from None
        fields = apply_output_field_defaults(signature, fields)
        if fields.keys() != signature.output_fields.keys():
            raise AdapterParseError(
                adapter_name="ChatAdapter",
                adapter=self.name,
                signature=signature,
                lm_response=completion,
                parsed_result=fields,
            )
        return fields

    def format_field_with_value(self, fields_with_values: dict[FieldInfoWithName, Any]) -> str:
        """Each field under its ``[[ ## name ## ]]`` header, blank-line separated."""
        output = []
        for field, field_value in fields_with_values.items():
            formatted_field_value = format_field_value(field_info=field.info, value=field_value)
            output.append(f"[[ ## {field.name} ## ]]\n{formatted_field_value}")
        return "\n\n".join(output).strip()


__all__ = ["COMPLETED", "ChatAdapter", "FieldInfoWithName", "field_header_pattern", "marker"]
