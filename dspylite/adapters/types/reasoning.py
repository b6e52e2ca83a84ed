"""``dspy.Reasoning``: the model's reasoning as an output field, native on LMs that reason natively.

Ported from DSPy 3.3.1 (MIT License); see THIRD_PARTY_NOTICES.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import pydantic

from dspylite.adapters.types.base_type import Type

if TYPE_CHECKING:
    from dspylite.signatures import Signature


class Reasoning(Type):
    """A str-like type: adapters treat it as text, and it compares equal to its text.

    On an LM that ``supports_reasoning``, the field is dropped from the prompt, ``reasoning_effort``
    is requested (``"low"`` unless set) and the value comes from the response's ``reasoning_content``.
    """

    content: str

    def format(self):
        return f"{self.content}"

    @pydantic.model_validator(mode="before")
    @classmethod
    def validate_input(cls, data: Any):
        if isinstance(data, cls):
            return data
        if isinstance(data, str):
            return {"content": data}
        if isinstance(data, dict):
            if "content" not in data:
                raise ValueError("`content` field is required for `dspy.Reasoning`")
            if not isinstance(data["content"], str):
                raise ValueError(
                    f"`content` field must be a string, but received type: {type(data['content'])}"
                )
            return {"content": data["content"]}
        raise ValueError(f"Received invalid value for `dspy.Reasoning`: {data}")

    @classmethod
    def adapt_to_native_lm_feature(
        cls, signature: type[Signature], field_name: str, lm: Any, lm_kwargs: dict[str, Any]
    ) -> type[Signature]:
        lm_defaults = getattr(lm, "kwargs", {}) or {}
        if "reasoning_effort" in lm_kwargs:
            reasoning_effort = lm_kwargs["reasoning_effort"]
        elif "reasoning_effort" in lm_defaults:
            reasoning_effort = lm_defaults["reasoning_effort"]
        else:
            reasoning_effort = "low"
        if reasoning_effort is None or not getattr(lm, "supports_reasoning", False):
            return signature
        if "gpt-5" in getattr(lm, "model", "") and getattr(lm, "model_type", "chat") == "chat":
            # The chat completions API of the GPT-5 family returns no reasoning content.
            return signature
        lm_kwargs["reasoning_effort"] = reasoning_effort
        return signature.delete(field_name)

    @classmethod
    def parse_lm_response(cls, response: str | dict[str, Any]) -> Optional[Reasoning]:
        if isinstance(response, dict) and response.get("reasoning_content"):
            return Reasoning(content=response["reasoning_content"])
        return None

    @classmethod
    def is_streamable(cls) -> bool:
        return True

    def __repr__(self) -> str:
        return f"{self.content!r}"

    def __str__(self) -> str:
        return self.content

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Reasoning):
            return self.content == other.content
        if isinstance(other, str):
            return self.content == other
        return False

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(self.content)

    def __len__(self) -> int:
        return len(self.content)

    def __getitem__(self, key):
        return self.content[key]

    def __contains__(self, item) -> bool:
        return item in self.content

    def __iter__(self):
        return iter(self.content)

    def __add__(self, other):
        if isinstance(other, Reasoning):
            return Reasoning(content=self.content + other.content)
        if isinstance(other, str):
            return self.content + other
        return NotImplemented

    def __radd__(self, other):
        if isinstance(other, str):
            return other + self.content
        if isinstance(other, Reasoning):
            return Reasoning(content=other.content + self.content)
        return NotImplemented

    def __getattr__(self, name):
        # str methods (.strip(), .lower(), ...) act on the content.
        if hasattr(str, name):
            return getattr(self.content, name)
        raise AttributeError(
            f"`{type(self).__name__}` object has no attribute '{name}'; convert it with str(reasoning) or "
            "use reasoning.content"
        )


__all__ = ["Reasoning"]
