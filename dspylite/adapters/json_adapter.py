"""JSON adapter: the model answers with one JSON object; vLLM is asked to enforce its schema."""

from __future__ import annotations

import json
import re
from typing import Any

from dspylite.adapters.base import Adapter, field_description
from dspylite.coerce import format_value, json_schema, to_jsonable
from dspylite.signatures import Signature

_DECODER = json.JSONDecoder()


class JSONAdapter(Adapter):
    """``structured=True`` sends ``response_format`` with the outputs' JSON schema (vLLM guided decoding)."""

    name = "json"

    def __init__(
        self,
        fallback: Adapter | None = None,
        structured: bool = True,
        *,
        callbacks: list | None = None,
        use_native_function_calling: bool = True,
    ):
        super().__init__(fallback, callbacks=callbacks)
        self.structured = structured
        # DSPy's flag; it only concerns ToolCalls output fields, which dspylite does not have.
        self.use_native_function_calling = use_native_function_calling

    def format_system(self, signature: type[Signature]) -> str:
        lines = ["Input fields:"]
        lines += [field_description(f) for f in signature.input_fields.values()]
        lines.append("Output fields:")
        lines += [field_description(f) for f in signature.output_fields.values()]
        lines.append("")
        keys = ", ".join(f'"{k}"' for k in signature.output_fields)
        lines.append(f"Reply with one JSON object with the keys {keys} and nothing else.")
        lines.append("")
        lines.append(f"Task: {signature.instructions}")
        return "\n".join(lines)

    def format_user(
        self, signature: type[Signature], inputs: dict[str, Any], *, is_demo: bool = False
    ) -> str:
        return "\n\n".join(
            f"{name}: {format_value(inputs[name])}" for name in signature.input_fields if name in inputs
        )

    def format_completion(self, signature: type[Signature], outputs: dict[str, Any]) -> str:
        ordered = {k: to_jsonable(outputs[k]) for k in signature.output_fields if k in outputs}
        return json.dumps(ordered, ensure_ascii=False)

    def output_schema(self, signature: type[Signature]) -> dict[str, Any]:
        """One JSON schema for all output fields; nested model definitions are hoisted to the root so
        every ``$ref`` (``#/$defs/...``) resolves."""
        return self.memo(signature, "schema", lambda: _output_schema(signature))

    def request_kwargs(self, signature: type[Signature]) -> dict[str, Any]:
        """vLLM's structured output: ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``."""
        if not self.structured:
            return {}
        return {
            "response_format": self.memo(
                signature,
                "response_format",
                lambda: {
                    "type": "json_schema",
                    "json_schema": {
                        "name": _schema_name(signature),
                        "schema": self.output_schema(signature),
                        "strict": True,
                    },
                },
            )
        }

    def parse(self, signature: type[Signature], completion: str) -> dict[str, Any]:
        data = self._decode_object(signature, completion)
        return self.typed_outputs(signature, completion, data, "key(s)")

    def _decode_object(self, signature: type[Signature], completion: str) -> dict[str, Any]:
        """The JSON object in the completion, found in linear time.

        First the object that starts at the first ``{`` (text after it is ignored), else the span
        from the first ``{`` to the last ``}``. Both are single scans; a regex such as
        ``\\{.*\\}`` tried from every ``{`` is quadratic on text with many ``{`` and no ``}``.
        """
        start = completion.find("{")
        end = completion.rfind("}")
        if start < 0 or end < start:
            raise self.parse_error(signature, completion, "no JSON object found")
        try:
            data, _ = _DECODER.raw_decode(completion, start)
        except json.JSONDecodeError:
            try:
                data = json.loads(completion[start : end + 1])
            except json.JSONDecodeError as exc:
                raise self.parse_error(signature, completion, f"invalid JSON ({exc.msg})") from None
            except (ValueError, RecursionError) as exc:  # ints over 4300 digits, deep nesting
                raise self.parse_error(signature, completion, _unreadable(exc)) from None
        except (ValueError, RecursionError) as exc:
            raise self.parse_error(signature, completion, _unreadable(exc)) from None
        if not isinstance(data, dict):
            raise self.parse_error(signature, completion, "the JSON is not an object")
        return data


def _unreadable(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "invalid JSON (nested too deeply)"
    return f"invalid JSON ({str(exc)[:120]})"


def _output_schema(signature: type[Signature]) -> dict[str, Any]:
    definitions: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    for name, field in signature.output_fields.items():
        schema = dict(json_schema(field.annotation))
        definitions.update(schema.pop("$defs", {}))
        if field.desc:
            schema.setdefault("description", field.desc)
        properties[name] = schema
    schema = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    if definitions:
        schema["$defs"] = definitions
    return schema


def _schema_name(signature: type[Signature]) -> str:
    # OpenAI-style servers want ^[a-zA-Z0-9_-]{1,64}$ here.
    name = re.sub(r"[^A-Za-z0-9_-]", "_", signature.__name__)[:64]
    return name or "outputs"
