"""Exception classes. Each names what is wrong so a user can act on it."""

from __future__ import annotations


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


class NoLMConfiguredError(DSPyLiteError, RuntimeError):
    """A predictor ran with no LM bound and none configured via dspylite.configure(lm=...)."""


class ProgramStateError(DSPyLiteError, ValueError):
    """A saved program file is missing, corrupt, or does not match the program it is loaded into."""


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
