"""``dspy.Audio``: an audio input, sent as an OpenAI ``input_audio`` content part.

Ported from DSPy 3.3.1 (MIT License); see THIRD_PARTY_NOTICES.md. Construction never touches the
filesystem or the network; ``from_path`` and ``from_url`` do, when called.
"""

from __future__ import annotations

import base64
import mimetypes
import os
from typing import Any
from urllib.parse import urlparse

import pydantic

from dspylite.adapters.types.base_type import Type


def _normalize_audio_format(audio_format: str) -> str:
    return audio_format.removeprefix("x-")


class Audio(Type):
    """Base64 audio ``data`` and its ``audio_format`` (``wav``, ``mp3``, ...)."""

    data: str
    audio_format: str

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    def __init__(self, *args, **data):
        if len(args) > 1:
            raise TypeError(f"Audio expected at most 1 positional argument, received {len(args)}")
        if args:
            if "data" in data:
                raise TypeError("Audio received data as both a positional and keyword argument")
            audio_format = data.pop("audio_format", None)
            normalized = encode_audio(args[0], format=audio_format or "wav")
            normalized.update(data)
            data = normalized
        super().__init__(**data)

    def format(self) -> list[dict[str, Any]]:
        return [{"type": "input_audio", "input_audio": {"data": self.data, "format": self.audio_format}}]

    @pydantic.model_validator(mode="before")
    @classmethod
    def validate_input(cls, values: Any) -> Any:
        if isinstance(values, cls):
            return {"data": values.data, "audio_format": values.audio_format}
        return encode_audio(values)

    @classmethod
    def from_url(cls, url: str, verify: bool = True, timeout: float | None = 30.0) -> Audio:
        """Download an HTTP(S) audio file (an explicit fetch: validate untrusted URLs first)."""
        import httpx

        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"Audio.from_url requires an HTTP(S) URL, received: {url}")
        response = httpx.get(url, verify=verify, timeout=timeout, follow_redirects=True)
        response.raise_for_status()
        mime_type = response.headers.get("Content-Type", "audio/wav")
        if not mime_type.startswith("audio/"):
            raise ValueError(f"Unsupported MIME type for audio: {mime_type}")
        audio_format = _normalize_audio_format(mime_type.split("/")[1])
        return cls(data=base64.b64encode(response.content).decode("utf-8"), audio_format=audio_format)

    @classmethod
    def from_path(cls, file_path: str) -> Audio:
        if not os.path.isfile(file_path):
            raise ValueError(f"File not found: {file_path}")
        mime_type, _ = mimetypes.guess_type(file_path)
        if not mime_type or not mime_type.startswith("audio/"):
            raise ValueError(f"Unsupported MIME type for audio: {mime_type}")
        with open(file_path, "rb") as file:
            encoded = base64.b64encode(file.read()).decode("utf-8")
        return cls(data=encoded, audio_format=_normalize_audio_format(mime_type.split("/")[1]))

    @classmethod
    def from_file(cls, file_path: str) -> Audio:
        return cls.from_path(file_path)

    def __str__(self) -> str:
        return self.serialize_model()

    def __repr__(self) -> str:
        return f"Audio(data=<AUDIO_BASE_64_ENCODED({len(self.data)})>, audio_format='{self.audio_format}')"


def encode_audio(audio: Any, sampling_rate: int = 16000, format: str = "wav") -> dict:
    """In-memory audio (a data URI, a dict, an ``Audio``, bytes) as ``{"data", "audio_format"}``."""
    if isinstance(audio, dict) and "data" in audio and "audio_format" in audio:
        return audio
    if isinstance(audio, Audio):
        return {"data": audio.data, "audio_format": audio.audio_format}
    if isinstance(audio, str) and audio.startswith("data:audio/"):
        header, separator, b64data = audio.partition(",")
        mime = header.removeprefix("data:").split(";", 1)[0]
        _, format_separator, audio_format = mime.partition("/")
        if not separator or not format_separator or not audio_format:
            raise ValueError("Malformed audio data URI")
        return {"data": b64data, "audio_format": _normalize_audio_format(audio_format)}
    if isinstance(audio, str):
        raise ValueError(
            "String audio inputs must be data URIs. "
            "Load local files with Audio.from_path() and remote resources with Audio.from_url()."
        )
    if isinstance(audio, bytes):
        return {"data": base64.b64encode(audio).decode("utf-8"), "audio_format": format}
    raise ValueError(f"Unsupported type for encode_audio: {type(audio)}")


__all__ = ["Audio", "encode_audio"]
