"""Predict: one signature, its demos and instructions, bound to an LM; every call leaves a trace."""

from __future__ import annotations

import logging
from typing import Any

from dspylite import settings as _settings
from dspylite.adapters.base import Adapter
from dspylite.adapters.chat import ChatAdapter
from dspylite.completion import Completion
from dspylite.errors import AdapterParseError, InputError, NoLMConfiguredError
from dspylite.example import Example, Prediction
from dspylite.modules.module import Module
from dspylite.signatures import Signature, ensure_signature
from dspylite.trace import TraceRecord, record

logger = logging.getLogger(__name__)

_DEFAULT_ADAPTER = ChatAdapter()
_CALL_OPTIONS = ("signature", "demos", "config", "lm")


class Predict(Module):
    """``Predict("question -> answer")(question="...")`` returns a Prediction with ``.answer``."""

    def __init__(self, signature: str | type[Signature], *, lm: Any = None, adapter: Adapter | None = None,
                 demos: list[Any] | None = None, **config: Any):
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
        signature = kwargs.pop("signature", self.signature)
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
            logger.info("predictor %s: %s adapter failed to parse; falling back to %s",
                        self._name, adapter.name, adapter.fallback.name)
            outputs, errors = self._run(adapter.fallback, lm, signature, demos, inputs, config)
        if not outputs:
            if errors:
                raise errors[0]
            raise AdapterParseError(f"the LM returned no completions for {signature.signature!r}",
                                    completion="", adapter=adapter.name, signature=signature.signature)
        return Prediction.from_completions(outputs)

    def _check_inputs(self, signature: type[Signature], kwargs: dict[str, Any]) -> dict[str, Any]:
        expected = signature.input_fields
        unknown = [k for k in kwargs if k not in expected]
        if unknown:
            raise InputError(
                f"unknown input field(s) {unknown} for signature {signature.signature!r}; "
                f"expected {list(expected)}"
            )
        missing = [k for k, f in expected.items() if k not in kwargs and not _is_optional(f.annotation)]
        if missing:
            raise InputError(
                f"missing input field(s) {missing} for signature {signature.signature!r} "
                f"(predictor {self._name or 'Predict'})"
            )
        return kwargs

    def _run(self, adapter: Adapter, lm: Any, signature: type[Signature], demos: list[Any],
             inputs: dict[str, Any], config: dict[str, Any]) -> tuple[list[dict[str, Any]], list[AdapterParseError]]:
        state = _settings.current()
        messages = adapter.format(signature, demos, inputs)
        request = {**state.lm_kwargs, **adapter.request_kwargs(signature), **config}
        n = request.pop("n", 1)
        rollout_id = request.pop("rollout_id", state.rollout_id)
        completions: list[Completion] = lm.generate(messages, n=n, rollout_id=rollout_id, **request)
        adapter.count("calls")
        outputs: list[dict[str, Any]] = []
        errors: list[AdapterParseError] = []
        for completion in completions:
            parsed, error = None, None
            try:
                parsed = adapter.parse(signature, completion.text)
                outputs.append(parsed)
            except AdapterParseError as exc:
                adapter.count("parse_failures")
                errors.append(exc)
                error = str(exc)
            record(TraceRecord(
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
            ))
        return outputs, errors

    # ---- DSPy-compatible state --------------------------------------------------------------------
    def dump_state(self) -> dict[str, Any]:
        from dspylite.coerce import to_jsonable

        demos = []
        for demo in self.demos:
            data = demo.toDict() if isinstance(demo, Example) else dict(demo)
            demos.append({k: to_jsonable(v) for k, v in data.items()})
        return {
            "traces": [],
            "train": [],
            "demos": demos,
            "signature": self.signature.dump_state(),
            "lm": self.lm.dump_state() if self.lm is not None and hasattr(self.lm, "dump_state") else None,
        }

    def load_state(self, state: dict[str, Any]) -> Predict:
        self.signature = self.signature.load_state(state.get("signature", {}))
        self.demos = [Example(**d) if isinstance(d, dict) else d for d in state.get("demos", [])]
        lm_state = state.get("lm")
        if lm_state:
            self.lm = _restore_lm(lm_state)
        return self

    def __repr__(self) -> str:
        return f"Predict({self.signature.signature!r}, demos={len(self.demos)})"


def _restore_lm(lm_state: dict[str, Any]) -> Any:
    """Re-attach a saved binding: against the configured LM's server when there is one."""
    base = _settings.current().lm
    if base is not None and hasattr(base, "copy"):
        return base.copy(model=lm_state["model"])
    from dspylite.lm import LM

    return LM.load_state(lm_state)


def _is_optional(annotation: Any) -> bool:
    import typing

    return type(None) in typing.get_args(annotation)
