"""Predict: one signature, its demos and instructions, bound to an LM; every call leaves a trace."""

from __future__ import annotations

import logging
import typing
from typing import Any

from dspylite import settings as _settings
from dspylite.adapters.base import Adapter, split_demo
from dspylite.adapters.chat import ChatAdapter
from dspylite.coerce import to_jsonable
from dspylite.completion import Completion
from dspylite.errors import (
    AdapterParseError,
    DemoError,
    InputError,
    NoLMConfiguredError,
    ProgramStateError,
    SignatureError,
)
from dspylite.example import Example, Prediction
from dspylite.modules.module import Module
from dspylite.signatures import Signature, ensure_signature
from dspylite.trace import TraceRecord

logger = logging.getLogger(__name__)

_DEFAULT_ADAPTER = ChatAdapter()
_CALL_OPTIONS = ("signature", "demos", "config", "lm")


class Predict(Module):
    """``Predict("question -> answer")(question="...")`` returns a Prediction with ``.answer``."""

    _leaf_module = True

    def __init__(
        self,
        signature: str | type[Signature],
        *,
        lm: Any = None,
        adapter: Adapter | None = None,
        demos: list[Any] | None = None,
        **config: Any,
    ):
        self.signature = ensure_signature(signature)
        self.lm = lm
        self.adapter = adapter
        self.demos: list[Any] = list(demos or [])
        self.config = config
        self._name: str | None = None

    def reset(self) -> None:
        self.lm = None
        self.demos = []

    # ---- calling ------------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Prediction:
        if args:
            raise InputError(
                f"Predict takes keyword arguments only (the input fields {list(self.signature.input_fields)}); "
                f"got {len(args)} positional argument(s)"
            )
        return super().__call__(**kwargs)

    def forward(self, **kwargs: Any) -> Prediction:
        signature = kwargs.pop("signature", None)
        signature = self.signature if signature is None else ensure_signature(signature)
        demos = kwargs.pop("demos", self.demos)
        config = {**self.config, **kwargs.pop("config", {})}
        lm = kwargs.pop("lm", None) or self.lm or _settings.current().lm
        inputs = self._check_inputs(signature, kwargs)
        if lm is None:
            raise NoLMConfiguredError(
                f"predictor {self._name or 'Predict'} has no LM: call dspylite.configure(lm=dspylite.LM(...)) "
                "or set predictor.lm"
            )
        adapter = self.adapter or _settings.current().adapter or _DEFAULT_ADAPTER
        outputs, errors = self._run(adapter, lm, signature, demos, inputs, config)
        if not outputs and adapter.fallback is not None:
            adapter.count("fallbacks")
            logger.info(
                "predictor %s: %s adapter failed to parse; falling back to %s",
                self._name,
                adapter.name,
                adapter.fallback.name,
            )
            outputs, errors = self._run(adapter.fallback, lm, signature, demos, inputs, config)
        if not outputs:
            if errors:
                raise errors[0]
            raise AdapterParseError(
                f"the LM returned no completions for {signature.signature!r}",
                completion="",
                adapter=adapter.name,
                signature=signature.signature,
            )
        prediction = Prediction.from_completions(outputs)
        _record_dspy_trace(self, inputs, prediction)
        return prediction

    def _check_inputs(self, signature: type[Signature], kwargs: dict[str, Any]) -> dict[str, Any]:
        """As DSPy: inputs the signature does not name are dropped with a warning; missing required
        inputs are warned about and the call goes ahead without them."""
        expected = signature.input_fields
        unknown = [k for k in kwargs if k not in expected]
        if unknown:
            logger.warning(
                "Input contains fields not in signature. These fields will be ignored: %s. Expected fields: %s.",
                unknown,
                list(expected),
            )
        missing = [k for k, f in expected.items() if k not in kwargs and not _is_optional(f.annotation)]
        if missing:
            logger.warning(
                "Not all input fields were provided to module %s. Present: %s. Missing: %s.",
                self._name or "Predict",
                [k for k in expected if k in kwargs],
                missing,
            )
        return {k: v for k, v in kwargs.items() if k in expected}

    def _run(
        self,
        adapter: Adapter,
        lm: Any,
        signature: type[Signature],
        demos: list[Any],
        inputs: dict[str, Any],
        config: dict[str, Any],
    ) -> tuple[list[dict[str, Any]], list[AdapterParseError]]:
        state = _settings.current()
        messages = adapter.format(signature, demos, inputs)
        request = {**state.lm_kwargs, **adapter.request_kwargs(signature), **config}
        n = request.pop("n", 1)
        rollout_id = request.pop("rollout_id", state.rollout_id)
        completions: list[Completion] = lm.generate(messages, n=n, rollout_id=rollout_id, **request)
        adapter.count("calls")
        outputs: list[dict[str, Any]] = []
        errors: list[AdapterParseError] = []
        sink = state.trace_sink
        for completion in completions:
            parsed, error = None, None
            try:
                # parse_completion turns whatever the parser raises into an AdapterParseError that
                # keeps the raw text: the trace below is always written, and the fallback tried.
                parsed = adapter.parse_completion(signature, completion.text)
                outputs.append(parsed)
            except AdapterParseError as exc:
                adapter.count("parse_failures")
                errors.append(exc)
                error = str(exc)
            if sink is not None:
                sink.append(
                    TraceRecord(
                        predictor_name=self._name or "self",
                        signature=signature.signature,
                        inputs=dict(inputs),
                        messages=messages,
                        completion=completion.text,
                        model=completion.model or getattr(lm, "model", ""),
                        adapter=adapter.name,
                        outputs=parsed,
                        error=error,
                        prompt_token_ids=completion.prompt_token_ids,
                        completion_token_ids=completion.token_ids,
                        logprobs=completion.logprobs,
                        finish_reason=completion.finish_reason,
                        example_id=state.example_id,
                        rollout_id=rollout_id,
                        lm_kwargs=request,
                        predictor=self,
                    )
                )
        return outputs, errors

    # ---- DSPy-compatible state --------------------------------------------------------------------
    def dump_state(self) -> dict[str, Any]:
        """DSPy's per-predictor layout: traces, train, demos, signature, lm."""
        demos = []
        for demo in self.demos:
            data = demo.toDict() if isinstance(demo, Example) else dict(demo)
            demos.append({k: to_jsonable(v) for k, v in data.items()})
        lm_state = None
        if self.lm is not None and hasattr(self.lm, "dump_state"):
            lm_state = {k: to_jsonable(v) for k, v in self.lm.dump_state().items()}
        return {
            "traces": [],
            "train": [],
            "demos": demos,
            "signature": self.signature.dump_state(),
            "lm": lm_state,
        }

    def load_state(self, state: dict[str, Any]) -> Predict:
        self.apply_state(self.parse_state(state))
        return self

    def parse_state(self, state: Any) -> dict[str, Any]:
        """Validate a saved predictor state and build what ``apply_state`` sets; changes nothing."""
        if not isinstance(state, dict):
            raise ProgramStateError(f"a predictor state must be a JSON object, got {type(state).__name__}")
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
        raw_demos = state.get("demos", [])
        if not isinstance(raw_demos, list):
            raise ProgramStateError(f"'demos' must be a list, got {type(raw_demos).__name__}")
        demos = []
        for i, demo in enumerate(raw_demos):
            if not isinstance(demo, dict):
                raise ProgramStateError(f"demo #{i} must be an object, got {type(demo).__name__}")
            try:
                split_demo(signature, demo, i)
            except DemoError as exc:
                raise ProgramStateError(str(exc)) from None
            demos.append(Example(**demo))
        lm_state = state.get("lm")
        if lm_state is not None and (
            not isinstance(lm_state, dict) or not isinstance(lm_state.get("model"), str)
        ):
            raise ProgramStateError("'lm' must be null or an object with a string 'model'")
        return {"signature": signature, "demos": demos, "lm": _restore_lm(lm_state) if lm_state else None}

    def apply_state(self, prepared: dict[str, Any]) -> None:
        self.signature = prepared["signature"]
        self.demos = prepared["demos"]
        # As in DSPy, a saved `"lm": null` means "use the configured LM".
        self.lm = prepared["lm"]

    def __repr__(self) -> str:
        return f"Predict({self.signature.signature!r}, demos={len(self.demos)})"


# Keys DSPy's LM.dump_state writes that are not request parameters for an OpenAI-compatible server.
_NON_REQUEST_LM_KEYS = frozenset(
    {
        "finetuning_model",
        "launch_kwargs",
        "train_kwargs",
        "provider",
        "callbacks",
        "use_developer_role",
        "api_key",
        "rollout_id",
        "_dspy_lm_class",
    }
)
_SAMPLING_KEYS = ("temperature", "max_tokens")


def _restore_lm(lm_state: dict[str, Any]) -> Any:
    """Re-attach a saved binding: the saved model (base or adapter) on the configured LM's server.

    With no LM configured, an ``LM`` is built from the saved settings (DSPy-only keys dropped).
    """
    base = _settings.current().lm
    if base is not None and hasattr(base, "copy"):
        sampling = {k: lm_state[k] for k in _SAMPLING_KEYS if lm_state.get(k) is not None}
        return base.copy(model=lm_state["model"], **sampling)
    from dspylite.lm import LM

    return LM.load_state({k: v for k, v in lm_state.items() if k not in _NON_REQUEST_LM_KEYS})


def _record_dspy_trace(predictor: Predict, inputs: dict[str, Any], prediction: Prediction) -> None:
    """Append ``(predictor, inputs, prediction)`` to DSPy's ``settings.trace``, capped at max_trace_size."""
    state = _settings.current()
    trace = state.trace
    if trace is None or state.max_trace_size <= 0:
        return
    if len(trace) >= state.max_trace_size:
        trace.pop(0)
    trace.append((predictor, dict(inputs), prediction))


def _is_optional(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)
