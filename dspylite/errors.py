"""Exception classes. Each names what is wrong so a user can act on it."""

from __future__ import annotations


class DSPyLiteError(Exception):
    """Base class for every error raised by dspylite."""


class SignatureError(DSPyLiteError, ValueError):
    """A signature string or class is malformed (bad field name, duplicate field, bad type)."""


class InputError(DSPyLiteError, ValueError):
    """A module was called with missing or unknown input fields."""


class DemoError(DSPyLiteError, ValueError):
    """A demo does not match its predictor's signature (missing field, wrong type)."""


class AdapterParseError(DSPyLiteError, ValueError):
    """The LM's completion could not be parsed into the signature's output fields.

    ``completion`` holds the raw text the model produced, so nothing is lost.
    """

    def __init__(
        self,
        message: str,
        *,
        completion: str,
        adapter: str,
        signature: str | None = None,
        parsed: dict | None = None,
    ):
        super().__init__(message)
        self.completion = completion
        self.adapter = adapter
        self.signature = signature
        self.parsed = parsed or {}

    def __reduce__(self):  # keep picklable across process pools
        return (_rebuild_parse_error, (str(self), self.completion, self.adapter, self.signature, self.parsed))


def _rebuild_parse_error(msg, completion, adapter, signature, parsed):
    return AdapterParseError(msg, completion=completion, adapter=adapter, signature=signature, parsed=parsed)


class LMError(DSPyLiteError, RuntimeError):
    """Base class for errors talking to a language-model server."""


class LMConnectionError(LMError):
    """The server could not be reached after all retries."""


class LMRequestError(LMError):
    """The server answered with a client error (4xx). Not retried: the request itself is wrong."""

    def __init__(self, message: str, *, status_code: int, body: str = ""):
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class LMServerError(LMError):
    """The server kept failing (429/5xx) after all retries."""

    def __init__(self, message: str, *, status_code: int | None = None, body: str = ""):
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class NoLMConfiguredError(DSPyLiteError, RuntimeError):
    """A predictor ran with no LM bound and none configured via dspylite.configure(lm=...)."""


class ProgramStateError(DSPyLiteError, ValueError):
    """A saved program file is missing, corrupt, or does not match the program it is loaded into."""


class MetricError(DSPyLiteError, ValueError):
    """A metric returned something other than a number or bool."""


class ConfigError(DSPyLiteError, ValueError):
    """A config file or a key=value override is invalid; the message names the field."""


class OptimizerError(DSPyLiteError, RuntimeError):
    """An optimizer cannot proceed (empty trainset, zero budget, ...)."""


class ServingError(DSPyLiteError, RuntimeError):
    """Starting, reaching or managing the vLLM server failed."""


class ColocationError(ServingError):
    """vLLM and training cannot share the device as configured (memory split too small, sleep mode
    unavailable, an adapter lost across a sleep)."""


class AdapterRegistryError(ServingError):
    """An adapter is missing, corrupt, too large for the server, or built for another base model."""


class TrainingError(DSPyLiteError, RuntimeError):
    """Fine-tuning or RL training could not run (empty data, bad target modules, ...)."""


class BindingError(DSPyLiteError, ValueError):
    """Predictors could not be bound to a served model or adapter (unknown predictor name, no predictors)."""


class EvaluationError(DSPyLiteError, RuntimeError):
    """An evaluation was stopped: more examples failed than ``max_errors`` allows."""


class ToolError(DSPyLiteError, ValueError):
    """A ReAct tool was called with unknown, missing or wrongly typed arguments."""
