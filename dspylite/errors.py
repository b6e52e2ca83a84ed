"""Exception classes. Each names what is wrong so a user can act on it."""

from __future__ import annotations

from typing import Any


class DSPyLiteError(Exception):
    """Base class for every error raised by dspylite."""


class SignatureError(DSPyLiteError, ValueError):
    """A signature string or class is malformed (bad field name, duplicate field, bad type)."""


class UndeclaredFieldError(SignatureError, TypeError):
    """A signature class annotates an attribute without ``InputField()``/``OutputField()``.

    Also a ``TypeError``, the class DSPy raises here, so DSPy code that catches it keeps working.
    """


class InputError(DSPyLiteError, ValueError):
    """A module was called with missing or unknown input fields."""


class DemoError(DSPyLiteError, ValueError):
    """A demo does not match its predictor's signature (missing field, wrong type)."""


class AdapterParseError(DSPyLiteError, ValueError):
    """The LM's completion could not be parsed into the signature's output fields.

    ``completion`` holds the raw text the model produced, so nothing is lost. DSPy's keyword form,
    ``AdapterParseError(adapter_name=..., signature=..., lm_response=..., message=..., parsed_result=...)``,
    builds DSPy's message; ``adapter_name``, ``lm_response`` and ``parsed_result`` name the same values
    as ``completion`` and ``parsed``; ``adapter`` is dspylite's short name ("chat", "json").
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        completion: str | None = None,
        adapter: str | None = None,
        signature: Any = None,
        parsed: dict | None = None,
        adapter_name: str | None = None,
        lm_response: str | None = None,
        parsed_result: dict | None = None,
    ):
        self.adapter_name = adapter_name or adapter or ""
        adapter = adapter or adapter_name or ""
        completion = completion if completion is not None else (lm_response or "")
        parsed = parsed if parsed is not None else parsed_result
        if adapter_name is not None:
            message = _dspy_parse_message(
                adapter_name, signature, completion, message and bounded_text(message, 600), parsed
            )
        super().__init__(message or f"{adapter} adapter could not parse the completion: {completion[:300]!r}")
        self.completion = completion
        self.adapter = adapter
        self.signature = signature
        self.parsed = parsed or {}

    @property
    def lm_response(self) -> str:
        return self.completion

    @property
    def parsed_result(self) -> dict:
        return self.parsed

    def __reduce__(self):  # keep picklable across process pools
        signature = self.signature if isinstance(self.signature, (str, type(None))) else str(self.signature)
        return (_rebuild_parse_error, (str(self), self.completion, self.adapter, signature, self.parsed))


def _dspy_parse_message(adapter_name, signature, lm_response, message, parsed_result) -> str:
    """DSPy's wording, which DSPy code matches on ("Adapter ChatAdapter failed to parse ...")."""
    expected = ", ".join(getattr(signature, "output_fields", {}) or {})
    text = f"{message}\n\n" if message else ""
    text += (
        f"Adapter {adapter_name} failed to parse the LM response. \n\n"
        f"LM Response: {bounded_text(lm_response, 1000)} \n\n"
        f"Expected to find output fields in the LM response: [{expected}] \n\n"
    )
    if parsed_result is not None:
        text += f"Actual output fields parsed from the LM response: [{', '.join(parsed_result)}] \n\n"
    return text


def bounded_text(text: Any, limit: int) -> str:
    """Model text in a message, cut to ``limit`` characters (the error keeps the whole text)."""
    try:
        text = str(text)
    except ValueError:  # e.g. an int over Python's 4300-digit str() limit
        return f"<{type(text).__name__} too large to show>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


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


class ContextWindowExceededError(LMRequestError):
    """The prompt does not fit the model's context window (the server rejected it as too long).

    Modules that can shorten their prompt (ReAct drops the oldest trajectory steps) catch this one.
    """

    def __init__(
        self,
        message: str = "Context window exceeded",
        *,
        model: str | None = None,
        status_code: int = 400,
        body: str = "",
    ):
        super().__init__(f"[{model}] {message}" if model else message, status_code=status_code, body=body)
        self.model = model


class LMServerError(LMError):
    """The server kept failing (429/5xx) after all retries."""

    def __init__(self, message: str, *, status_code: int | None = None, body: str = ""):
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class LMResponseError(LMServerError):
    """The server answered 200 with a body that is not an OpenAI completion (a JSON list, choices
    that are not objects, non-numeric usage, ...). Counts as a server failure, like a 5xx."""


class LMUnavailableError(LMError):
    """The circuit breaker is open: the server failed too many requests in a row (connection errors,
    timeouts, 5xx after retries), so every further call fails fast instead of waiting on it.

    ``api_base`` names the server. Jobs and ``Evaluate`` stop on it rather than count it per example.
    """

    def __init__(self, message: str, *, api_base: str, failures: int):
        super().__init__(message)
        self.api_base = api_base
        self.failures = failures

    def __reduce__(self):  # keep picklable across process pools
        return (_rebuild_unavailable, (str(self), self.api_base, self.failures))


def _rebuild_unavailable(msg, api_base, failures):
    return LMUnavailableError(msg, api_base=api_base, failures=failures)


class NoLMConfiguredError(DSPyLiteError, ValueError, RuntimeError):
    """A predictor ran with no usable LM: none bound and none configured via dspylite.configure(lm=...),
    or the configured one is not an LM. A ``ValueError``, as DSPy raises."""


class ProgramStateError(DSPyLiteError, ValueError):
    """A saved program file is missing, corrupt, or does not match the program it is loaded into."""


class MissingPredictorStateError(ProgramStateError, KeyError):
    """A saved program has no state for one of the program's predictors (a ``KeyError`` too, as in DSPy)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MetricError(DSPyLiteError, ValueError):
    """A metric returned something other than a number or bool."""


class ConfigError(DSPyLiteError, ValueError):
    """A config file or a key=value override is invalid; the message names the field."""


class SettingError(ConfigError):
    """A config section's value is invalid, its keys named relative to the section
    (``SettingError("{} must be > 0, got 0", "k")``); ``within`` names them from an enclosing section,
    which is how ``config_io`` reports ``optimizer.labeled.k`` wherever the section sits."""

    def __init__(self, text: str, *keys: str):
        self.text, self.keys = text, keys
        super().__init__(text.format(*keys))

    def within(self, section: str) -> SettingError:
        return SettingError(self.text, *(f"{section}.{key}" for key in self.keys))


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


class BudgetExhausted(OptimizerError):
    """An optimizer's LM-call budget (``max_lm_calls``) is spent; runs cut short by it score nothing."""


class AllExamplesFailedError(EvaluationError):
    """Every example of an evaluation failed, so there is no score to report; ``error_counts`` says
    how many failed of each kind (``parse``, ``lm``, ``program``, ``metric``)."""

    def __init__(self, message: str, *, error_counts: dict[str, int]):
        super().__init__(message)
        self.error_counts = dict(error_counts)

    def __reduce__(self):
        return (_rebuild_all_failed, (str(self), self.error_counts))


def _rebuild_all_failed(msg, error_counts):
    return AllExamplesFailedError(msg, error_counts=error_counts)


class ToolError(DSPyLiteError, ValueError):
    """A ReAct tool was called with unknown, missing or wrongly typed arguments."""


class PickleNotSupportedError(ProgramStateError):
    """A DSPy call asked for pickled state (``save_program=True``, ``allow_pickle=True``).

    dspylite saves programs as JSON state only: pickle runs arbitrary code when loaded.
    """


class ParallelError(DSPyLiteError, RuntimeError):
    """``Parallel``/``Module.batch``: more examples failed than ``max_errors`` allows."""


class DatasetSourceError(DSPyLiteError, RuntimeError):
    """A named data set could be loaded neither from the hub nor from the package that ships it;
    the message names the command that fetches it by hand."""
