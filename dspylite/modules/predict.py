"""Predict: one signature, its demos and instructions, bound to an LM; every call leaves a trace.

DSPy's ``Predict`` (``dspy.predict.predict``, MIT License; see THIRD_PARTY_NOTICES.md): the call
checks its inputs (fields not in the signature, missing ones, values of the wrong type are logged),
picks the LM (its own, else the configured one) and the adapter (the configured one, else
``ChatAdapter``), and returns a ``Prediction`` of the parsed outputs. dspylite adds a per-predictor
``lm=``/``adapter=``/``demos=`` and records each completion as a ``TraceRecord`` when traces are
captured.
"""

from __future__ import annotations

import logging
import random
import types
from typing import Any, Literal, Union, get_args, get_origin

from dspylite import settings as _settings
from dspylite.adapters.chat import ChatAdapter
from dspylite.adapters.utils import annotation_allows_none
from dspylite.errors import InputError, NoLMConfiguredError, ProgramStateError, SignatureError
from dspylite.example import Example, Prediction
from dspylite.modules.module import Module
from dspylite.signatures import UNDEFINED, Signature, ensure_signature
from dspylite.trace import predictor_call

logger = logging.getLogger(__name__)

# Keys a saved LM state may carry that point the LM somewhere else: a program file could send your
# requests (and API key) to another server. Kept only for trusted files.
UNSAFE_LM_STATE_KEYS = frozenset({"api_base", "base_url", "model_list"})


class Predict(Module):
    """``Predict("question -> answer")(question="...")`` returns a Prediction with ``.answer``.

    ``**config`` are request parameters for every call (``n=``, ``temperature=``, ...); a call's
    ``config={...}`` overrides them once.
    """

    _leaf_module = True

    def __init__(
        self,
        signature: str | type[Signature],
        callbacks: list | None = None,
        *,
        lm: Any = None,
        adapter: Any = None,
        demos: list[Any] | None = None,
        **config: Any,
    ):
        super().__init__(callbacks=callbacks)
        self.stage = random.randbytes(8).hex()
        self.signature = ensure_signature(signature)
        self.config = config
        self.adapter = adapter
        self._name: str | None = None
        self.reset()
        self.lm = lm
        self.demos = list(demos or [])

    def reset(self) -> None:
        self.lm = None
        self.traces: list = []
        self.train: list = []
        self.demos = []

    # ---- calling ------------------------------------------------------------------------------------
    def _positional_args_error(self) -> InputError:
        input_fields = list(self.signature.input_fields)
        example = input_fields[0] if input_fields else "input"
        return InputError(
            "Positional arguments are not allowed when calling `dspy.Predict`, must use keyword arguments "
            f"that match your signature input fields: '{', '.join(input_fields)}'. For example: "
            f"`predict({example}=input_value, ...)`."
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Prediction:
        if args:
            raise self._positional_args_error()
        return super().__call__(**kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Prediction:
        if args:
            raise self._positional_args_error()
        return await super().acall(**kwargs)

    def forward(self, **kwargs: Any) -> Prediction:
        lm, config, signature, demos, inputs = self._forward_preprocess(**kwargs)
        adapter = self._adapter()
        with predictor_call(self):
            completions = adapter(lm, lm_kwargs=config, signature=signature, demos=demos, inputs=inputs)
        return self._forward_postprocess(completions, signature, **inputs)

    async def aforward(self, **kwargs: Any) -> Prediction:
        lm, config, signature, demos, inputs = self._forward_preprocess(**kwargs)
        adapter = self._adapter()
        with predictor_call(self):
            completions = await adapter.acall(
                lm, lm_kwargs=config, signature=signature, demos=demos, inputs=inputs
            )
        return self._forward_postprocess(completions, signature, **inputs)

    def _adapter(self) -> Any:
        return self.adapter or _settings.current().adapter or _default_adapter()

    def _forward_preprocess(self, **kwargs: Any) -> tuple[Any, dict[str, Any], type[Signature], list, dict]:
        if "new_signature" in kwargs:
            raise ValueError("new_signature is no longer a valid keyword argument.")
        signature = kwargs.pop("signature", None)
        signature = self.signature if signature is None else ensure_signature(signature)
        demos = kwargs.pop("demos", self.demos)
        config = {**self.config, **kwargs.pop("config", {})}
        lm = kwargs.pop("lm", self.lm) or _settings.current().lm
        _check_lm(lm, self._name)

        # n > 1 at a (near-)zero temperature would sample the same answer n times.
        lm_defaults = getattr(lm, "kwargs", None) or {}
        temperature = config.get("temperature") or lm_defaults.get("temperature")
        num_generations = config.get("n") or lm_defaults.get("n") or lm_defaults.get("num_generations") or 1
        if (temperature is None or temperature <= 0.15) and num_generations > 1:
            config["temperature"] = 0.7

        prediction = kwargs.get("prediction")
        if isinstance(prediction, dict) and prediction.get("type") == "content" and "content" in prediction:
            # OpenAI's predicted outputs: a request parameter, not an input field.
            config["prediction"] = kwargs.pop("prediction")

        for name, field in signature.input_fields.items():
            if name not in kwargs and field.default is not UNDEFINED:
                kwargs[name] = field.default

        extra_fields = [k for k in kwargs if k not in signature.input_fields]
        if extra_fields:
            logger.warning(
                "Input contains fields not in signature. These fields will be ignored: %s. Expected fields: %s.",
                extra_fields,
                list(signature.input_fields),
            )
        if _settings.current().warn_on_type_mismatch:
            for name, field in signature.input_fields.items():
                if name not in kwargs or kwargs[name] is None:
                    continue
                if not getattr(field, "annotated", True):  # DSPy's IS_TYPE_UNDEFINED: no type given
                    continue
                if not _is_value_compatible_with_type(kwargs[name], field.annotation):
                    logger.warning(
                        "Type mismatch for field '%s': expected %s based on given Signature, "
                        "but the provided value is incompatible: %s.",
                        name,
                        _get_type_name(field.annotation),
                        kwargs[name],
                    )
        missing = [
            k
            for k, field in signature.input_fields.items()
            if k not in kwargs and not annotation_allows_none(field.annotation)
        ]
        if missing:
            logger.warning(
                "Not all input fields were provided to module. Present: %s. Missing: %s.",
                [k for k in signature.input_fields if k in kwargs],
                missing,
            )
        inputs = {k: v for k, v in kwargs.items() if k in signature.input_fields}
        return lm, config, signature, demos, inputs

    def _forward_postprocess(
        self, completions: list[dict[str, Any]], signature: type[Signature], **inputs: Any
    ):
        prediction = Prediction.from_completions(completions, signature=signature)
        state = _settings.current()
        trace = state.trace
        if inputs.pop("_trace", True) and trace is not None and state.max_trace_size > 0:
            # DSPy's (predictor, inputs, prediction) trace, a list capped at max_trace_size.
            if len(trace) >= state.max_trace_size:
                trace.pop(0)
            trace.append((self, dict(inputs), prediction))
        return prediction

    def update_config(self, **kwargs: Any) -> None:
        self.config = {**self.config, **kwargs}

    def get_config(self) -> dict[str, Any]:
        return self.config

    # ---- state -------------------------------------------------------------------------------------
    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        """DSPy's per-predictor layout: traces, train, demos, signature, lm."""
        demos = []
        for demo in self.demos:
            data = demo.toDict() if isinstance(demo, Example) else dict(demo)
            demos.append({k: serialize_object(v) for k, v in data.items()})
        lm_state = self.lm.dump_state() if self.lm is not None and hasattr(self.lm, "dump_state") else None
        return {
            "traces": list(self.traces),
            "train": list(self.train),
            "demos": demos,
            "signature": self.signature.dump_state(),
            "lm": lm_state,
        }

    def load_state(self, state: dict[str, Any], *, allow_unsafe_lm_state: bool = False) -> Predict:
        """Apply a saved state. ``allow_unsafe_lm_state=True`` keeps a saved ``api_base``/``base_url``/
        ``model_list`` and imports a saved custom LM class: only for trusted files."""
        self.apply_state(self.parse_state(state, allow_unsafe_lm_state=allow_unsafe_lm_state))
        return self

    def parse_state(self, state: Any, *, allow_unsafe_lm_state: bool = False) -> dict[str, Any]:
        """Validate a saved predictor state and build what ``apply_state`` sets; changes nothing."""
        if not isinstance(state, dict):
            raise ProgramStateError(f"a predictor state must be a JSON object, got {type(state).__name__}")
        if "extended_signature" in state:
            raise ProgramStateError("Loading extended_signature (DSPy <= 2.5) is not supported")
        if "signature" in state:
            sig_state = state["signature"]
        elif "signature_instructions" in state:  # DSPy <= 2.5.2 wrote the instructions only
            sig_state = {"instructions": state["signature_instructions"]}
        else:
            raise ProgramStateError("the predictor state has no 'signature' entry")
        if not isinstance(sig_state, dict):
            raise ProgramStateError(f"'signature' must be an object, got {type(sig_state).__name__}")
        fields = sig_state.get("fields", [])
        if not isinstance(fields, list) or not all(isinstance(f, dict) for f in fields):
            raise ProgramStateError(
                "'signature.fields' must be a list of objects with 'prefix' and 'description'"
            )
        instructions = sig_state.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise ProgramStateError(
                f"'signature.instructions' must be a string, got {type(instructions).__name__}"
            )
        try:
            signature = self.signature.load_state(sig_state)
        except SignatureError as exc:
            raise ProgramStateError(str(exc)) from None
        demos = state.get("demos", [])
        if not isinstance(demos, list) or not all(isinstance(d, (dict, Example)) for d in demos):
            raise ProgramStateError("'demos' must be a list of objects")
        lm_state = state.get("lm")
        if lm_state is not None and (
            not isinstance(lm_state, dict) or not isinstance(lm_state.get("model"), str)
        ):
            raise ProgramStateError("'lm' must be null or an object with a string 'model'")
        lm = _restore_lm(lm_state, allow_unsafe_lm_state) if lm_state else None
        return {
            "signature": signature,
            "demos": list(demos),  # as DSPy: loaded demos are plain dicts
            "lm": lm,
            "traces": list(state.get("traces") or []),
            "train": list(state.get("train") or []),
        }

    def apply_state(self, prepared: dict[str, Any]) -> None:
        self.signature = prepared["signature"]
        self.demos = prepared["demos"]
        self.traces = prepared.get("traces", [])
        self.train = prepared.get("train", [])
        # As in DSPy, a saved `"lm": null` means "use the configured LM".
        self.lm = prepared["lm"]

    def __repr__(self) -> str:
        return f"Predict({self.signature.signature!r}, demos={len(self.demos)})"


_DEFAULT_ADAPTERS: list[ChatAdapter] = []


def _default_adapter() -> ChatAdapter:
    """The ChatAdapter predictors use when none is set: one per process, so its per-signature renderings
    (the system message) are computed once, not on every call."""
    if not _DEFAULT_ADAPTERS:
        _DEFAULT_ADAPTERS.append(ChatAdapter())
    return _DEFAULT_ADAPTERS[0]


def _check_lm(lm: Any, name: str | None) -> None:
    """The LM must be an LM object: DSPy's errors for the usual mistakes (none, a model name, a function)."""
    if lm is None:
        raise NoLMConfiguredError(
            f"No LM is loaded for predictor {name or 'Predict'}. Please configure the LM using "
            "`dspy.configure(lm=dspy.LM(...))`. e.g, `dspy.configure(lm=dspy.LM('openai/gpt-4o-mini'))`"
        )
    if isinstance(lm, str):
        raise NoLMConfiguredError(
            f"LM must be an instance of `dspy.BaseLM`, not a string. Instead of using a string like "
            f"'dspy.configure(lm=\"{lm}\")', please configure the LM like 'dspy.configure(lm=dspy.LM(\"{lm}\"))'"
        )
    from dspylite.clients.base_lm import BaseLM

    if not isinstance(lm, BaseLM) and not callable(getattr(lm, "generate", None)):
        raise NoLMConfiguredError(
            f"LM must be an instance of `dspy.BaseLM`, not {type(lm)}. Received `lm={lm}`."
        )


def _sanitize_lm_state(lm_state: dict[str, Any], allow_unsafe_lm_state: bool) -> dict[str, Any]:
    if allow_unsafe_lm_state:
        return lm_state
    unsafe_keys = sorted(UNSAFE_LM_STATE_KEYS.intersection(lm_state))
    if not unsafe_keys:
        return lm_state
    logger.warning(
        "Ignoring unsafe LM config key(s) during state load: %s. "
        "Pass allow_unsafe_lm_state=True to preserve these keys for trusted files.",
        unsafe_keys,
    )
    return {k: v for k, v in lm_state.items() if k not in UNSAFE_LM_STATE_KEYS}


_SAMPLING_KEYS = ("temperature", "max_tokens")


def _restore_lm(lm_state: dict[str, Any], allow_unsafe_lm_state: bool) -> Any:
    """Re-attach a saved binding.

    With an LM configured, the saved model (base or adapter) is bound on the configured LM (its class
    and server), keeping the saved sampling settings: that is how a program re-attaches the adapters
    it was tuned with. Without one, the LM is rebuilt from the state (``BaseLM.load_state``), as DSPy
    does: the built-in LM from any state, another class only for trusted files.
    """
    from dspylite.clients.base_lm import BaseLM

    lm_state = _sanitize_lm_state(lm_state, allow_unsafe_lm_state)
    base = _settings.current().lm
    if base is not None and hasattr(base, "copy"):
        sampling = {k: lm_state[k] for k in _SAMPLING_KEYS if lm_state.get(k) is not None}
        return base.copy(model=lm_state["model"], **sampling)
    return BaseLM.load_state(lm_state, allow_custom_lm_class=allow_unsafe_lm_state)


def serialize_object(obj: Any) -> Any:
    """A demo value as JSON-ready data: pydantic models dumped in JSON mode (URLs and datetimes as
    strings), containers recursively, anything else as it is."""
    if hasattr(obj, "model_dump") and hasattr(type(obj), "model_fields"):
        return obj.model_dump(mode="json")
    if isinstance(obj, list):
        return [serialize_object(item) for item in obj]
    if isinstance(obj, tuple):
        return tuple(serialize_object(item) for item in obj)
    if isinstance(obj, dict):
        return {key: serialize_object(value) for key, value in obj.items()}
    if isinstance(obj, Example):
        return serialize_object(obj.toDict())
    return obj


def _get_type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is None:
        return annotation.__name__ if hasattr(annotation, "__name__") else str(annotation)
    if origin is Literal:
        return f"Literal[{', '.join(repr(arg) for arg in args)}]"
    if args:
        args_str = ", ".join("..." if arg is ... else _get_type_name(arg) for arg in args)
        return f"{getattr(origin, '__name__', str(origin))}[{args_str}]"
    return getattr(origin, "__name__", str(origin))


def _is_value_compatible_with_type(value: Any, expected: Any) -> bool:
    # A list of strings for a str field is fine: adapters render it as a numbered list.
    if expected is str and isinstance(value, list) and all(isinstance(item, str) for item in value):
        return True
    return _check_type(value, expected)


def _check_type(value: Any, expected: Any) -> bool:
    if expected is Any:
        return True
    origin = get_origin(expected)
    args = get_args(expected)
    if origin is Union or origin is types.UnionType:
        return any(_check_type(value, arg) for arg in args)
    if origin is Literal:
        return value in args
    if origin is list:
        return isinstance(value, list) and (not args or all(_check_type(item, args[0]) for item in value))
    if origin is dict:
        if not isinstance(value, dict):
            return False
        if not args:
            return True
        key_type, val_type = args
        return all(_check_type(k, key_type) and _check_type(v, val_type) for k, v in value.items())
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if not args:
            return True
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_check_type(item, args[0]) for item in value)
        return len(value) == len(args) and all(
            _check_type(item, arg) for item, arg in zip(value, args, strict=False)
        )
    if origin in (set, frozenset):
        return isinstance(value, origin) and (not args or all(_check_type(item, args[0]) for item in value))
    if isinstance(expected, type):
        return isinstance(value, expected)
    return False


__all__ = ["Predict", "serialize_object"]
