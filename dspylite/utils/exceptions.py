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
]
