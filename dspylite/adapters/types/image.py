"""``Image``: an image input, sent to the LM as an OpenAI ``image_url`` content part.

Built from a URL (http(s) or data URI), raw bytes, a local file or a PIL image; local data becomes a
base64 data URI. In a prompt the adapter replaces the image's placeholder by a content part, so a
user message with images is a list of ``{"type": "text"}`` and ``{"type": "image_url"}`` parts.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import re
from pathlib import Path
from typing import Any

_OPEN, _CLOSE = "<<dspylite-image>>", "<</dspylite-image>>"
_PLACEHOLDER = re.compile(re.escape(_OPEN) + r"(.*?)" + re.escape(_CLOSE), re.DOTALL)
_MAGIC = {
    b"\x89PNG": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF8": "image/gif",
    b"RIFF": "image/webp",
}


class Image:
    """``Image("https://...")``, ``Image(url=b"...")``, ``Image.from_file(path)``, ``Image.from_PIL(img)``."""

    def __init__(
        self, url: str | bytes | os.PathLike | None = None, *, download: bool = False, **kwargs: Any
    ):
        if url is None:
            url = kwargs.pop("url", None)
        if url is None:
            raise TypeError("Image needs a url, bytes or file path")
        if download:
            raise ValueError(
                "Image(download=True): dspylite does not fetch images itself; pass the URL (the server "
                "fetches it) or the image's bytes / a local file"
            )
        self.url = _to_url(url)

    @classmethod
    def from_url(cls, url: str, download: bool = False) -> Image:
        return cls(url, download=download)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Image:
        return cls(Path(path))

    @classmethod
    def from_PIL(cls, image: Any) -> Image:  # noqa: N802 - DSPy's name
        import io

        buffer = io.BytesIO()
        image.save(buffer, format=image.format or "PNG")
        return cls(buffer.getvalue())

    def format(self) -> list[dict[str, Any]]:
        """The OpenAI content part(s) for this image."""
        return [{"type": "image_url", "image_url": {"url": self.url}}]

    def model_dump(self, mode: str | None = None) -> str:
        return str(self)

    def __str__(self) -> str:
        # A placeholder the adapter turns into a content part (see split_content_parts).
        return f"{_OPEN}{self.url}{_CLOSE}"

    def __repr__(self) -> str:
        # DSPy's format: base64 payloads are summarised by their length.
        match = re.match(r"^data:(image/[\w.+-]+);base64,(.*)$", self.url, re.DOTALL)
        if match:
            return f"Image(url=data:{match.group(1)};base64,<IMAGE_BASE_64_ENCODED({len(match.group(2))})>)"
        return f"Image(url='{self.url}')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and self.url == other.url

    def __hash__(self) -> int:
        return hash(self.url)


def _to_url(source: str | bytes | os.PathLike) -> str:
    if isinstance(source, bytes):
        return _data_uri(source, _sniff(source))
    if isinstance(source, os.PathLike) or (
        isinstance(source, str)
        and not re.match(r"^(https?|data|gs|s3|file):", source)
        and Path(source).is_file()
    ):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"Image: no such file {path}")
        data = path.read_bytes()
        return _data_uri(data, mimetypes.guess_type(path.name)[0] or _sniff(data))
    if isinstance(source, str) and re.match(r"^(https?|data|gs|s3):", source):
        return source
    raise ValueError(f"Image: {source!r} is not a URL (http(s):// or data:), a file, or bytes")


def _sniff(data: bytes) -> str:
    return next(
        (mime for magic, mime in _MAGIC.items() if data.startswith(magic)), "application/octet-stream"
    )


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def split_content_parts(text: str) -> str | list[dict[str, Any]]:
    """A message text with image placeholders -> OpenAI content parts; text without any is kept."""
    if _OPEN not in text:
        return text
    parts: list[dict[str, Any]] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        if match.start() > position:
            parts.append({"type": "text", "text": text[position : match.start()]})
        parts.append({"type": "image_url", "image_url": {"url": match.group(1)}})
        position = match.end()
    if position < len(text):
        parts.append({"type": "text", "text": text[position:]})
    return parts


__all__ = ["Image", "split_content_parts"]
