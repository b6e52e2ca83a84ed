"""``asyncify(program)``: an async callable that runs a synchronous program in a worker thread.

The thread runs in a copy of the caller's context, so ``dspylite.context(...)`` settings apply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


def asyncify(program: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def run(*args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(program, *args, **kwargs)

    return run


def syncify(program: Any) -> Callable[..., Any]:
    """The reverse: a blocking callable for a program whose ``acall``/``aforward`` is async."""

    def run(*args: Any, **kwargs: Any) -> Any:
        call = program.acall if hasattr(program, "acall") else program
        return asyncio.run(call(*args, **kwargs))

    return run


__all__ = ["asyncify", "syncify"]
