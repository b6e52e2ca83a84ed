"""``dspylite.inspect_history(n)``: the last ``n`` LM calls of the process, as DSPy's.

Every LM client appends its calls to ``GLOBAL_HISTORY`` (bounded); ``LM.inspect_history`` shows
one LM's own calls.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any, TextIO

GLOBAL_HISTORY: deque[dict[str, Any]] = deque(maxlen=10_000)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: text, and a note for each image
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                parts.append(f"<image_url: {str(part['image_url'].get('url', ''))[:80]}>")
            elif isinstance(part, dict):
                parts.append(part.get("text", ""))
        return "".join(parts)
    return str(content)


def render_history(entries: list[dict[str, Any]]) -> str:
    blocks = []
    for entry in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.get("timestamp", 0)))
        lines = [f"[{when}] model={entry.get('model')}{' (cached)' if entry.get('cached') else ''}"]
        if entry.get("messages") is not None:
            for message in entry["messages"]:
                lines.append(f"--- {message.get('role', '?')} ---")
                lines.append(_content_text(message.get("content")))
        else:
            lines.append("--- prompt ---")
            lines.append(str(entry.get("prompt")))
        outputs = entry.get("outputs") or []
        for i, text in enumerate(outputs):
            lines.append(f"--- response {i + 1}/{len(outputs)} ---")
            lines.append(str(text))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def inspect_history(n: int = 1, file: TextIO | None = None) -> str:
    """Write the last ``n`` LM calls (prompt messages and responses) to ``file`` (stdout) and return
    the text. Displaying is this function's whole job, as in DSPy; library code never calls it."""
    text = render_history(list(GLOBAL_HISTORY)[-n:] if n > 0 else [])
    out = file if file is not None else sys.stdout
    out.write(text + "\n")
    return text


__all__ = ["GLOBAL_HISTORY", "inspect_history", "render_history"]
