"""XML adapter: each field is wrapped in ``<name>...</name>`` tags, DSPy's ``XMLAdapter`` format.

The system prompt, demos and history render as in the chat adapter with tags in place of the
``[[ ## name ## ]]`` markers; parsing takes the first ``<name>...</name>`` element of each output
field (anything outside the tags is ignored) and converts it to the field's type.
"""

from __future__ import annotations

import re
from typing import Any

from dspylite.adapters.base import Adapter, field_description
from dspylite.coerce import format_value
from dspylite.signatures import Signature

_ELEMENT = re.compile(r"<(?P<name>\w+)>(?P<content>.*?)</(?P=name)>", re.DOTALL)


def tag(name: str, value: str) -> str:
    return f"<{name}>\n{value}\n</{name}>"


class XMLAdapter(Adapter):
    name = "xml"

    def __init__(self, callbacks: list | None = None, *, fallback: Adapter | None = None):
        super().__init__(fallback, callbacks=callbacks)

    def format_system(self, signature: type[Signature]) -> str:
        lines = ["Input fields:"]
        lines += [field_description(f) for f in signature.input_fields.values()]
        lines.append("Output fields:")
        lines += [field_description(f) for f in signature.output_fields.values()]
        lines.append("")
        lines.append(
            "Each field is wrapped in XML tags named after it, like <name>value</name>. Reply with the "
            "output fields in order, each in its own tags, and nothing else."
        )
        lines.append("")
        lines.append(f"Task: {signature.instructions}")
        return "\n".join(lines)

    def format_user(
        self, signature: type[Signature], inputs: dict[str, Any], *, is_demo: bool = False
    ) -> str:
        parts = [tag(name, format_value(inputs[name])) for name in signature.input_fields if name in inputs]
        if not is_demo:
            wanted = ", then ".join(f"<{name}>" for name in signature.output_fields)
            parts.append(f"Respond with the corresponding output fields wrapped in XML tags: {wanted}.")
        return "\n\n".join(parts)

    def format_completion(self, signature: type[Signature], outputs: dict[str, Any]) -> str:
        return "\n\n".join(
            tag(name, format_value(outputs[name])) for name in signature.output_fields if name in outputs
        )

    def parse(self, signature: type[Signature], completion: str) -> dict[str, Any]:
        sections: dict[str, str] = {}
        for match in _ELEMENT.finditer(completion):
            name = match.group("name")
            if name in signature.output_fields and name not in sections:
                sections[name] = match.group("content").strip()
        return self.typed_outputs(signature, completion, sections, "output field(s)")


__all__ = ["XMLAdapter"]
