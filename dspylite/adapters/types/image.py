"""``dspy.Image``: an image input, sent to the LM as an OpenAI ``image_url`` content part.

Ported from DSPy 3.3.1 (MIT License); see THIRD_PARTY_NOTICES.md. Built from a URL (http(s), gs)
or data URI, raw bytes or a PIL image; ``Image.from_path`` reads a local file and ``Image.from_url``
downloads one. Construction itself never reads files or the network, so an ``Image`` parsed from
model output cannot make the program fetch anything.
"""

from __future__ import annotations

import base64
import io
import mimetypes
import os
import warnings
from typing import Any
from urllib.parse import urlparse

import pydantic

from dspylite.adapters.types.base_type import Type

_UNSET = object()
_MAGIC = {
    b"\x89PNG": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF8": "image/gif",
    b"RIFF": "image/webp",
}


class Image(Type):
    """``Image("https://...")``, ``Image(data_uri)``, ``Image(png_bytes)``, ``Image(pil_image)``."""

    url: str

    model_config = pydantic.ConfigDict(
        frozen=True, str_strip_whitespace=True, validate_assignment=True, extra="forbid"
    )

    def __init__(self, source: Any = None, /, *, download: Any = _UNSET, verify: Any = _UNSET, **data):
        download_requested = download is not _UNSET
        verify_requested = verify is not _UNSET
        if (download_requested or verify_requested) and source is None:
            # Only a developer's positional call may download: model output validated into an Image
            # must never make the program fetch a URL.
            raise TypeError(
                "`download` and `verify` are only valid with a positional image source; "
                "use Image.from_url(url, verify=...) to download a remote image."
            )
        if download_requested or verify_requested:
            warnings.warn(
                "Image(url, download=..., verify=...) is deprecated; use Image.from_url(url, verify=...).",
                DeprecationWarning,
                stacklevel=2,
            )
        if source is not None and "url" in data:
            raise TypeError("Image received both `source` and `url`; provide only one image source")
        if source is not None:
            if isinstance(source, dict) and set(source) == {"url"}:
                data["url"] = source["url"]
            else:
                data["url"] = source
        url = data.get("url")
        if download_requested and download and isinstance(url, str) and _is_http_url(url):
            data["url"] = _encode_image_from_url(url, verify=verify if verify_requested else True)
        elif "url" in data:
            data["url"] = encode_image(data["url"])
        super().__init__(**data)

    def format(self) -> list[dict[str, Any]] | str:
        return [{"type": "image_url", "image_url": {"url": encode_image(self.url)}}]

    @classmethod
    def from_url(cls, url: str, verify: bool = True, timeout: float | None = 30.0) -> Image:
        """Download an HTTP(S) image into a data URI (an explicit fetch: validate untrusted URLs first)."""
        if not _is_http_url(url):
            raise ValueError(f"Image.from_url requires an HTTP(S) URL, received: {url}")
        return cls(_encode_image_from_url(url, verify=verify, timeout=timeout))

    @classmethod
    def from_path(cls, file_path: str | os.PathLike) -> Image:
        """Read a local image file into a data URI."""
        if not os.path.isfile(file_path):
            raise ValueError(f"File not found: {file_path}")
        with open(file_path, "rb") as file:
            data = file.read()
        mime_type = mimetypes.guess_type(str(file_path))[0] or _sniff(data)
        if mime_type is None:
            raise ValueError(f"Could not determine MIME type for file: {file_path}")
        return cls(_data_uri(data, mime_type))

    @classmethod
    def from_file(cls, file_path: str | os.PathLike) -> Image:
        """The same as :meth:`from_path` (DSPy's older name)."""
        return cls.from_path(file_path)

    @classmethod
    def from_PIL(cls, pil_image: Any) -> Image:  # noqa: N802 - DSPy's name
        return cls(pil_image)

    def __str__(self):
        return self.serialize_model()

    def __repr__(self):
        if "base64" in self.url:
            len_base64 = len(self.url.split("base64,")[1])
            image_type = self.url.split(";")[0].split("/")[-1]
            return f"Image(url=data:image/{image_type};base64,<IMAGE_BASE_64_ENCODED({len_base64!s})>)"
        return f"Image(url='{self.url}')"


def is_url(string: str) -> bool:
    try:
        result = urlparse(string)
        return result.scheme in ("http", "https", "gs") and bool(result.netloc)
    except ValueError:
        return False


def _is_http_url(string: str) -> bool:
    try:
        result = urlparse(string)
        return result.scheme in ("http", "https") and bool(result.netloc)
    except ValueError:
        return False


def encode_image(image: Any) -> str:
    """An image as a data URI, or a remote URL kept as it is."""
    if isinstance(image, dict) and "url" in image:
        return encode_image(image["url"])
    if isinstance(image, str):
        if image.startswith("data:") or is_url(image):
            return image
        raise ValueError(
            f"Unrecognized image string: {image}. Local files must be loaded with Image.from_path()."
        )
    if isinstance(image, bytes):
        mime_type = _sniff(image)
        if mime_type is None:
            return _encode_pil_image(_open_pil(image))
        return _data_uri(image, mime_type)
    if isinstance(image, Image):
        return image.url
    if type(image).__module__.startswith("PIL."):
        return _encode_pil_image(image)
    raise ValueError(f"Unsupported image type: {type(image)}")


def _sniff(data: bytes) -> str | None:
    return next((mime for magic, mime in _MAGIC.items() if data.startswith(magic)), None)


def _data_uri(data: bytes, mime_type: str) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode('utf-8')}"


def _open_pil(data: bytes) -> Any:
    try:
        from PIL import Image as PILImage
    except ImportError as exc:
        raise ValueError("image bytes of an unknown format; install Pillow to read them") from exc
    try:
        return PILImage.open(io.BytesIO(data))
    except Exception as exc:  # PIL.UnidentifiedImageError
        raise ValueError(f"Bytes could not be identified as an image: {exc}") from exc


def _encode_pil_image(image: Any) -> str:
    buffered = io.BytesIO()
    file_format = image.format or "PNG"
    image.save(buffered, format=file_format)
    mime_type, _ = mimetypes.guess_type(f"file.{file_format.lower()}")
    if mime_type is None:
        raise ValueError(f"Could not determine MIME type for image format: {file_format}")
    return _data_uri(buffered.getvalue(), mime_type)


def _encode_image_from_url(image_url: str, verify: bool = True, timeout: float | None = 30.0) -> str:
    import httpx

    response = httpx.get(image_url, verify=verify, timeout=timeout, follow_redirects=True)
    response.raise_for_status()
    mime_type = response.headers.get("Content-Type", "") or mimetypes.guess_type(image_url)[0]
    if not mime_type:
        raise ValueError(f"Could not determine MIME type for URL: {image_url}")
    return _data_uri(response.content, mime_type)


def is_image(obj: Any) -> bool:
    if type(obj).__module__.startswith("PIL."):
        return True
    return isinstance(obj, str) and (obj.startswith("data:") or is_url(obj))


__all__ = ["Image", "encode_image", "is_image", "is_url"]
