"""``dspy.File``: a file input (data URI or uploaded file id), sent as an OpenAI ``file`` content part.

Ported from DSPy 3.3.1 (MIT License); see THIRD_PARTY_NOTICES.md.
"""

from __future__ import annotations

import base64
import mimetypes
import os
from typing import Any

import pydantic

from dspylite.adapters.types.base_type import Type


class File(Type):
    """``file_data`` (a ``data:<mime>;base64,...`` URI), ``file_id`` and/or ``filename``."""

    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None

    model_config = pydantic.ConfigDict(
        frozen=True, str_strip_whitespace=True, validate_assignment=True, extra="forbid"
    )

    def __init__(self, *args, **data):
        if len(args) > 1:
            raise TypeError(f"File expected at most 1 positional argument, received {len(args)}")
        if args:
            normalized = encode_file_to_dict(args[0])
            overlap = sorted(set(normalized) & set(data))
            if overlap:
                raise TypeError(
                    f"File received {', '.join(overlap)} from both the positional source and keyword arguments"
                )
            normalized.update(data)
            data = normalized
        super().__init__(**data)

    @pydantic.model_validator(mode="before")
    @classmethod
    def validate_input(cls, values: Any) -> Any:
        if isinstance(values, cls):
            return {"file_data": values.file_data, "file_id": values.file_id, "filename": values.filename}
        if isinstance(values, dict):
            if "file_data" in values or "file_id" in values or "filename" in values:
                return values
            raise ValueError(
                "Value of `dspy.File` must contain at least one of: file_data, file_id, or filename"
            )
        return encode_file_to_dict(values)

    def format(self) -> list[dict[str, Any]]:
        file_dict = {}
        if self.file_data:
            file_dict["file_data"] = self.file_data
        if self.file_id:
            file_dict["file_id"] = self.file_id
        if self.filename:
            file_dict["filename"] = self.filename
        return [{"type": "file", "file": file_dict}]

    def __str__(self):
        return self.serialize_model()

    def __repr__(self):
        parts = []
        if self.file_data is not None:
            if self.file_data.startswith("data:"):
                mime_type = self.file_data.split(";")[0].split(":")[1]
                payload = (
                    self.file_data.split("base64,")[1] if "base64," in self.file_data else self.file_data
                )
                parts.append(f"file_data=<DATA_URI({mime_type}, {len(payload)} chars)>")
            else:
                parts.append(f"file_data=<DATA({len(self.file_data)} chars)>")
        if self.file_id is not None:
            parts.append(f"file_id='{self.file_id}'")
        if self.filename is not None:
            parts.append(f"filename='{self.filename}'")
        return f"File({', '.join(parts)})"

    @classmethod
    def from_path(cls, file_path: str, filename: str | None = None, mime_type: str | None = None) -> File:
        if not os.path.isfile(file_path):
            raise ValueError(f"File not found: {file_path}")
        with open(file_path, "rb") as f:
            file_bytes = f.read()
        filename = filename if filename is not None else os.path.basename(file_path)
        if mime_type is None:
            mime_type = mimetypes.guess_type(file_path)[0] or "application/octet-stream"
        return cls.from_bytes(file_bytes, filename=filename, mime_type=mime_type)

    @classmethod
    def from_bytes(
        cls, file_bytes: bytes, filename: str | None = None, mime_type: str = "application/octet-stream"
    ) -> File:
        encoded = base64.b64encode(file_bytes).decode("utf-8")
        return cls(file_data=f"data:{mime_type};base64,{encoded}", filename=filename)

    @classmethod
    def from_file_id(cls, file_id: str, filename: str | None = None) -> File:
        return cls(file_id=file_id, filename=filename)


def encode_file_to_dict(file_input: Any) -> dict:
    if isinstance(file_input, File):
        return {
            k: v
            for k, v in (
                ("file_data", file_input.file_data),
                ("file_id", file_input.file_id),
                ("filename", file_input.filename),
            )
            if v is not None
        }
    if isinstance(file_input, dict):
        if "file_data" in file_input or "file_id" in file_input or "filename" in file_input:
            return file_input
        raise ValueError("Value of `dspy.File` must contain at least one of: file_data, file_id, or filename")
    if isinstance(file_input, str):
        if file_input.startswith("data:"):
            return {"file_data": file_input}
        raise ValueError(
            f"String file inputs must be data URIs, received: {file_input}. Load local files with File.from_path()."
        )
    if isinstance(file_input, bytes):
        return {"file_data": File.from_bytes(file_input).file_data}
    raise ValueError(f"Unsupported file input type: {type(file_input)}")


__all__ = ["File", "encode_file_to_dict"]
