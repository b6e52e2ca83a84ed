"""DSPy's ``dspy.utils.exceptions``: the errors DSPy code catches, as dspylite raises them.

``LMError`` is the base of every error talking to a server; ``ContextWindowExceededError`` is what
an LM raises when a prompt is too long; ``AdapterParseError`` carries the raw completion.
"""

from dspylite.errors import (
    AdapterParseError,
    ContextWindowExceededError,
    DSPyLiteError,
    LMConnectionError,
    LMError,
    LMRequestError,
    LMServerError,
    NoLMConfiguredError,
)


def format_error_for_lm(error: BaseException, *, traceback_frames: int = 0) -> str:
    """An exception as text for an LM to read (ReAct's observations): its message, or with
    ``traceback_frames > 0`` a traceback limited to that many frames."""
    if traceback_frames <= 0:
        return str(error)
    import traceback

    return (
        "\n"
        + "".join(
            traceback.format_exception(type(error), error, error.__traceback__, limit=traceback_frames)
        ).strip()
    )


# DSPy's names for the same failures.
DSPyError = DSPyLiteError
LMNotConfiguredError = NoLMConfiguredError
LMInvalidRequestError = LMRequestError
LMTransportError = LMConnectionError

__all__ = [
    "AdapterParseError",
    "ContextWindowExceededError",
    "DSPyError",
    "LMError",
    "LMInvalidRequestError",
    "LMNotConfiguredError",
    "LMServerError",
    "LMTransportError",
    "format_error_for_lm",
]
