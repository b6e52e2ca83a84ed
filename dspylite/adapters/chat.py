"""Chat adapter: fields delimited by DSPy's ``[[ ## name ## ]]`` markers.

Using the same markers as DSPy's ChatAdapter means demos, traces and fine-tuning data written by
either tool look alike to the model.
"""

from __future__ import annotations

import re
from typing import Any

from dspylite.adapters.base import Adapter, field_description
from dspylite.coerce import format_value
from dspylite.signatures import Signature

_MARKER = re.compile(r"\[\[ ## (\w+) ## \]\]")
COMPLETED = "[[ ## completed ## ]]"


def marker(name: str) -> str:
    return f"[[ ## {name} ## ]]"


class ChatAdapter(Adapter):
    """DSPy's constructor: ``ChatAdapter(callbacks=None, use_native_function_calling=False)``.

    ``use_native_function_calling`` is kept for DSPy code; in DSPy it only changes how ``ToolCalls``
    output fields travel, a type dspylite does not have (ReAct calls tools through text fields).
    """

    name = "chat"

    def __init__(
        self,
        callbacks: list | None = None,
        use_native_function_calling: bool = False,
        *,
        fallback: Adapter | None = None,
    ):
        super().__init__(fallback, callbacks=callbacks)
        self.use_native_function_calling = use_native_function_calling

    def format_system(self, signature: type[Signature]) -> str:
        lines = ["Input fields:"]
        lines += [field_description(f) for f in signature.input_fields.values()]
        lines.append("Output fields:")
        lines += [field_description(f) for f in signature.output_fields.values()]
        lines.append("")
        lines.append(
            "Each field starts with a line `[[ ## name ## ]]` followed by its value. Reply with the output "
            f"fields in order, then `{COMPLETED}`."
        )
        lines.append("")
        lines.append(f"Task: {signature.instructions}")
        return "\n".join(lines)

    def format_user(
        self, signature: type[Signature], inputs: dict[str, Any], *, is_demo: bool = False
    ) -> str:
        parts = [
            f"{marker(name)}\n{format_value(inputs[name])}"
            for name in signature.input_fields
            if name in inputs
        ]
        if not is_demo:
            parts.append(self.memo(signature, "respond", lambda: _respond_with(signature)))
        return "\n\n".join(parts)

    def format_completion(self, signature: type[Signature], outputs: dict[str, Any]) -> str:
        parts = [
            f"{marker(name)}\n{format_value(outputs[name])}"
            for name in signature.output_fields
            if name in outputs
        ]
        parts.append(COMPLETED)
        return "\n\n".join(parts)

    def parse(self, signature: type[Signature], completion: str) -> dict[str, Any]:
        sections: dict[str, str] = {}
        matches = list(_MARKER.finditer(completion))
        for i, m in enumerate(matches):
            name = m.group(1)
            end = matches[i + 1].start() if i + 1 < len(matches) else len(completion)
            if name in signature.output_fields and name not in sections:
                sections[name] = completion[m.end() : end].strip()
        return self.typed_outputs(signature, completion, sections, "output field(s)")


def _respond_with(signature: type[Signature]) -> str:
    wanted = ", then ".join(f"`{marker(n)}`{_type_hint(f)}" for n, f in signature.output_fields.items())
    return f"Respond with {wanted}, then `{COMPLETED}`."


def _type_hint(field) -> str:
    return "" if field.annotation is str else f" (type: {field.type_name})"
