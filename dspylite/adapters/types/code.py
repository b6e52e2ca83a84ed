"""``dspy.Code``: source code as a field value; ``dspy.Code["java"]`` names the language.

Ported from DSPy 3.3.1 (MIT License); see THIRD_PARTY_NOTICES.md.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import pydantic
from pydantic import create_model

from dspylite.adapters.types.base_type import Type


class Code(Type):
    """Code in a string. As an output, the model answers with a Markdown code block, which is unwrapped."""

    code: str

    language: ClassVar[str] = "python"

    def format(self):
        return f"{self.code}"

    @pydantic.model_serializer()
    def serialize_model(self):
        # Plain text in prompts: no custom-type markers around code.
        return self.format()

    @classmethod
    def description(cls) -> str:
        return (
            "Code represented in a string, specified in the `code` field. If this is an output field, the code "
            f"field should follow the markdown code block format, e.g. \n```{cls.language.lower()}\n{{code}}\n```"
            f"\nProgramming language: {cls.language}"
        )

    @pydantic.model_validator(mode="before")
    @classmethod
    def validate_input(cls, data: Any):
        if isinstance(data, cls):
            return data
        if isinstance(data, str):
            return {"code": _filter_code(data)}
        if isinstance(data, dict):
            if "code" not in data:
                raise ValueError("`code` field is required for `dspy.Code`")
            if not isinstance(data["code"], str):
                raise ValueError(f"`code` field must be a string, but received type: {type(data['code'])}")
            return {"code": _filter_code(data["code"])}
        raise ValueError(f"Received invalid value for `dspy.Code`: {data}")


def _filter_code(code: str) -> str:
    """The code inside a Markdown code block (language tag dropped), else the text as it is."""
    match = re.search(r"```(?:[^\n]*)\n(.*?)```", code, re.DOTALL)
    if match:
        return match.group(1).strip()
    match = re.search(r"```(.*?)```", code, re.DOTALL)
    if match:
        return match.group(1).strip()
    return code


def _code_class_getitem(cls, language):
    code_with_language_cls = create_model(f"{cls.__name__}_{language}", __base__=cls)
    code_with_language_cls.language = language
    return code_with_language_cls


Code.__class_getitem__ = classmethod(_code_class_getitem)

__all__ = ["Code"]
