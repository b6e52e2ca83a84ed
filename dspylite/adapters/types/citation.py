"""``Citations`` (``dspy.experimental``): quoted spans of input documents that support an answer.

Ported from DSPy 3.3.1 (MIT License); see THIRD_PARTY_NOTICES.md. Native on LMs with a citations
API (Anthropic models); elsewhere the model writes them as JSON like any typed output field.
"""

from __future__ import annotations

from typing import Any, Optional

import pydantic

from dspylite.adapters.types.base_type import Type


class Citations(Type):
    """Experimental: This class may change or be removed in a future release without warning.

    Citations extracted from an LM response with source references: each has the cited text, the
    index (and title) of the document it comes from and its character span there.
    """

    class Citation(Type):
        """Individual citation with character location information."""

        type: str = "char_location"
        cited_text: str
        document_index: int
        document_title: str | None = None
        start_char_index: int
        end_char_index: int
        supported_text: str | None = None

        def format(self) -> dict[str, Any]:
            citation_dict = {
                "type": self.type,
                "cited_text": self.cited_text,
                "document_index": self.document_index,
                "start_char_index": self.start_char_index,
                "end_char_index": self.end_char_index,
            }
            if self.document_title:
                citation_dict["document_title"] = self.document_title
            if self.supported_text:
                citation_dict["supported_text"] = self.supported_text
            return citation_dict

    citations: list[Citation]

    @classmethod
    def from_dict_list(cls, citations_dicts: list[dict[str, Any]]) -> Citations:
        return cls(citations=[cls.Citation(**item) for item in citations_dicts])

    @classmethod
    def description(cls) -> str:
        return (
            "Citations with quoted text and source references. "
            "Include the exact text being cited and information about its source."
        )

    def format(self) -> list[dict[str, Any]]:
        return [citation.format() for citation in self.citations]

    @pydantic.model_validator(mode="before")
    @classmethod
    def validate_input(cls, data: Any):
        if isinstance(data, cls):
            return data
        if isinstance(data, list) and all(isinstance(item, dict) and "cited_text" in item for item in data):
            return {"citations": [cls.Citation(**item) for item in data]}
        if isinstance(data, dict):
            if "citations" in data:
                citations_data = data["citations"]
                if isinstance(citations_data, list):
                    return {
                        "citations": [
                            cls.Citation(**item) if isinstance(item, dict) else item
                            for item in citations_data
                        ]
                    }
            elif "cited_text" in data:
                return {"citations": [cls.Citation(**data)]}
        raise ValueError(f"Received invalid value for `Citations`: {data}")

    def __iter__(self):
        return iter(self.citations)

    def __len__(self):
        return len(self.citations)

    def __getitem__(self, index):
        return self.citations[index]

    @classmethod
    def adapt_to_native_lm_feature(cls, signature, field_name, lm, lm_kwargs):
        if str(getattr(lm, "model", "")).startswith("anthropic/"):
            return signature.delete(field_name)
        return signature

    @classmethod
    def is_streamable(cls) -> bool:
        return True

    @classmethod
    def parse_lm_response(cls, response: str | dict[str, Any]) -> Optional[Citations]:
        if isinstance(response, dict) and isinstance(response.get("citations"), list):
            return cls.from_dict_list(response["citations"])
        return None


__all__ = ["Citations"]
