"""The adapter contract, as DSPy's: ``adapter(lm, lm_kwargs, signature, demos, inputs)`` formats the
signature, demos and inputs into chat messages, calls the LM and parses each completion into the
signature's output fields.

Ported from DSPy 3.3.1 / 3.4.1 (MIT License, Copyright (c) 2023 Stanford Future Data Systems); see
THIRD_PARTY_NOTICES.md. What dspylite adds:

* every completion becomes a ``TraceRecord`` (exact messages, raw text, token ids, logprobs) when a
  trace capture is active, whether it parsed or not;
* every parse failure is an ``AdapterParseError`` carrying the raw completion, and is counted in
  ``adapter.usage``; a fallback adapter (DSPy's ChatAdapter -> JSONAdapter retry by default) is counted;
* dspylite's own LMs are called through ``lm.generate()`` (same request, richer result) unless a
  subclass overrides ``__call__``, which is then honoured as in DSPy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any, get_origin

from dspylite import settings as _settings
from dspylite.adapters.types.history import History
from dspylite.adapters.types.markers import CUSTOM_TYPE_START_IDENTIFIER
from dspylite.adapters.utils import (
    apply_output_field_defaults,
    is_type,
    loaded_type,
    serialize_for_json,
)
from dspylite.completion import Completion
from dspylite.errors import AdapterParseError, DemoError
from dspylite.example import Example
from dspylite.signatures import InputField, Signature, make_signature
from dspylite.trace import TraceRecord, current_predictor
from dspylite.utils.callback import with_callbacks

logger = logging.getLogger(__name__)

Messages = list[dict[str, Any]]

_INCOMPLETE_DEMO_PREFIX = (
    "This is an example of the task, though some input or output fields are not supplied."
)


class Adapter:
    """Formats prompts and parses completions for one wire format.

    DSPy's constructor: ``callbacks`` run around ``format`` and ``parse``; with
    ``use_native_function_calling`` a ``dspy.ToolCalls`` output travels as the LM's native tool calls
    when the LM ``supports_function_calling``; ``native_response_types`` (default: ``Citations`` and
    ``Reasoning``) are filled by native LM features where the LM has them; ``parallel_tool_calls`` is
    sent when tools are. dspylite's ``fallback`` is another adapter tried when parsing fails.
    """

    name: str = "base"

    def __init__(
        self,
        callbacks: list | None = None,
        use_native_function_calling: bool = False,
        native_response_types: list[type] | None = None,
        parallel_tool_calls: bool | None = None,
        *,
        fallback: Adapter | None = None,
    ):
        self.callbacks = list(callbacks or [])
        self.use_native_function_calling = use_native_function_calling
        self.parallel_tool_calls = parallel_tool_calls
        self._native_response_types = native_response_types
        self.fallback = fallback
        self._lock = threading.Lock()
        self.usage = {"calls": 0, "parse_failures": 0, "fallbacks": 0}
        # Per-signature renderings that do not depend on inputs (the system message).
        self._memo: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Every adapter's own parse/format reports to callbacks, as DSPy's adapters do.
        for method in ("parse", "format"):
            if method in cls.__dict__ and not getattr(cls.__dict__[method], "__wrapped__", None):
                setattr(cls, method, with_callbacks(cls.__dict__[method]))

    def __deepcopy__(self, memo: dict[int, Any]) -> Adapter:
        # Programs are deep-copied by optimizers; copies keep formatting (and counting) through the same adapter.
        return self

    @property
    def native_response_types(self) -> list[type]:
        if self._native_response_types is not None:
            return self._native_response_types
        # DSPy's default, [Citations, Reasoning]: a type whose module was never loaded is in no signature.
        return [t for t in (loaded_type("Citations"), loaded_type("Reasoning")) if t is not None]

    @native_response_types.setter
    def native_response_types(self, value: list[type] | None) -> None:
        self._native_response_types = value

    def memo(self, signature: type[Signature], key: str, build: Callable[[], Any]) -> Any:
        """``build()`` once per (signature, key); signatures are immutable, so the value never goes stale."""
        per_sig = self._memo.get(signature)
        if per_sig is None:
            per_sig = self._memo.setdefault(signature, {})
        value = per_sig.get(key)
        if value is None:
            value = per_sig[key] = build()
        return value

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.usage[key] += n

    # ---- calling --------------------------------------------------------------------------------
    def __call__(
        self,
        lm: Any,
        lm_kwargs: dict[str, Any],
        signature: type[Signature],
        demos: list[dict[str, Any]],
        inputs: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """Format, call the LM, parse: one dict of output values per completion."""
        original_kwargs = dict(lm_kwargs)
        try:
            processed_signature = self._call_preprocess(lm, lm_kwargs, signature, inputs)
            messages = self.format(processed_signature, demos, inputs)
            self._finish_lm_kwargs(lm_kwargs)
            completions = call_lm(lm, messages, lm_kwargs)
            return self._call_postprocess(
                processed_signature, signature, completions, lm, lm_kwargs, messages, inputs
            )
        except AdapterParseError:
            if self.fallback is None:
                raise
            self._log_fallback()
            return self.fallback(lm, original_kwargs, signature, demos, inputs)

    async def acall(
        self,
        lm: Any,
        lm_kwargs: dict[str, Any],
        signature: type[Signature],
        demos: list[dict[str, Any]],
        inputs: dict[str, Any],
    ) -> list[dict[str, Any]]:
        original_kwargs = dict(lm_kwargs)
        try:
            processed_signature = self._call_preprocess(lm, lm_kwargs, signature, inputs)
            messages = self.format(processed_signature, demos, inputs)
            self._finish_lm_kwargs(lm_kwargs)
            completions = await acall_lm(lm, messages, lm_kwargs)
            return self._call_postprocess(
                processed_signature, signature, completions, lm, lm_kwargs, messages, inputs
            )
        except AdapterParseError:
            if self.fallback is None:
                raise
            self._log_fallback()
            return await self.fallback.acall(lm, original_kwargs, signature, demos, inputs)

    def _log_fallback(self) -> None:
        self.count("fallbacks")
        # DEBUG: a model that ignores the format falls back on every call; the count is in usage.
        logger.debug("%s adapter failed to parse; falling back to %s", self.name, self.fallback.name)

    @staticmethod
    def _finish_lm_kwargs(lm_kwargs: dict[str, Any]) -> None:
        if lm_kwargs.get("parallel_tool_calls") is not None:
            lm_kwargs.setdefault("tool_choice", "auto")

    def _call_preprocess(
        self, lm: Any, lm_kwargs: dict[str, Any], signature: type[Signature], inputs: dict[str, Any]
    ) -> type[Signature]:
        """The signature to render, with native features switched on in ``lm_kwargs`` (in place)."""
        if not self.use_native_function_calling:
            for key in ("tools", "tool_choice", "parallel_tool_calls"):
                lm_kwargs.pop(key, None)
        else:
            tool_call_input_field_name = self._get_tool_call_input_field_name(signature)
            tool_call_output_field_name = self._get_tool_call_output_field_name(signature)
            if tool_call_output_field_name and tool_call_input_field_name is None:
                raise ValueError(
                    f"You provided an output field {tool_call_output_field_name} to receive the tool calls "
                    "information, but did not provide any tools as the input. Please provide a list of tools as the "
                    "input by adding an input field with type `list[dspy.Tool]`."
                )
            if tool_call_output_field_name and getattr(lm, "supports_function_calling", False):
                tools = inputs[tool_call_input_field_name]
                tools = tools if isinstance(tools, list) else [tools]
                lm_kwargs["tools"] = [tool.format_as_litellm_function_call() for tool in tools]
                if self.parallel_tool_calls is not None and lm_kwargs.get("parallel_tool_calls") is None:
                    lm_kwargs["parallel_tool_calls"] = self.parallel_tool_calls
                signature = signature.delete(tool_call_output_field_name)
                signature = signature.delete(tool_call_input_field_name)
            elif tool_call_output_field_name:
                for key in ("tools", "tool_choice", "parallel_tool_calls"):
                    lm_kwargs.pop(key, None)

        native = self.native_response_types
        if native:
            base = loaded_type("Type")
            for name, field in signature.output_fields.items():
                annotation = field.annotation
                if (
                    isinstance(annotation, type)
                    and annotation in native
                    and base
                    and issubclass(annotation, base)
                ):
                    signature = annotation.adapt_to_native_lm_feature(signature, name, lm, lm_kwargs)
        return signature

    def _call_postprocess(
        self,
        processed_signature: type[Signature],
        original_signature: type[Signature],
        completions: list[Completion | str | dict[str, Any]],
        lm: Any,
        lm_kwargs: dict[str, Any],
        messages: Messages | None = None,
        inputs: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Parse each completion; record each in the active trace capture. The first failure is raised
        after every completion is recorded."""
        self.count("calls")
        tool_call_output_field_name = self._get_tool_call_output_field_name(original_signature)
        values: list[dict[str, Any]] = []
        first_error: AdapterParseError | None = None
        for completion in completions:
            if not isinstance(completion, Completion):  # DSPy's output form: a string or a dict
                completion = Completion.from_output(completion, model=getattr(lm, "model", ""))
            try:
                value = self._parse_completion(
                    processed_signature, original_signature, completion, tool_call_output_field_name
                )
            except AdapterParseError as exc:
                self.count("parse_failures")
                self._trace(original_signature, inputs, messages, completion, lm, lm_kwargs, None, str(exc))
                first_error = first_error or exc
                continue
            self._trace(original_signature, inputs, messages, completion, lm, lm_kwargs, value, None)
            values.append(value)
        if first_error is not None:
            raise first_error
        return values

    def _parse_completion(
        self,
        processed_signature: type[Signature],
        original_signature: type[Signature],
        completion: Completion,
        tool_call_output_field_name: str | None,
    ) -> dict[str, Any]:
        text = completion.text
        tool_calls = completion.tool_calls
        if text and not (tool_calls and tool_call_output_field_name):
            value = self._parse(processed_signature, text)
        elif tool_calls and tool_call_output_field_name:
            try:
                value = (
                    self._parse(processed_signature, text)
                    if text and processed_signature.output_fields
                    else {}
                )
            except AdapterParseError:
                value = {}
        else:
            raise AdapterParseError(
                adapter_name=type(self).__name__,
                adapter=self.name,
                signature=original_signature,
                lm_response=str(completion.as_output()),
                message="The LM returned an empty or null response.",
            )
        # Fields removed for native features are absent from the processed parse.
        value = apply_output_field_defaults(original_signature, value)
        for field_name in original_signature.output_fields:
            value.setdefault(field_name, None)
        if tool_calls and tool_call_output_field_name:
            tool_calls_type = loaded_type("ToolCalls")
            calls = [_provider_tool_call_to_tool_call_dict(tool_call) for tool_call in tool_calls]
            value[tool_call_output_field_name] = tool_calls_type.from_dict_list(calls)
        output = completion.as_output()
        base = loaded_type("Type")
        for name, field in original_signature.output_fields.items():
            annotation = field.annotation
            if (
                isinstance(annotation, type)
                and annotation in self.native_response_types
                and base is not None
                and issubclass(annotation, base)
            ):
                parsed_value = annotation.parse_lm_response(output)
                if parsed_value is not None:
                    value[name] = parsed_value
        if completion.logprobs:
            value["logprobs"] = completion.logprobs
        return value

    def _parse(self, signature: type[Signature], completion: str) -> dict[str, Any]:
        """``parse``, with the guarantee callers rely on: any failure is an ``AdapterParseError``
        carrying the raw completion, whatever the adapter (built-in or user-written) raised."""
        try:
            return self.parse(signature, completion)
        except AdapterParseError as exc:
            if not exc.adapter or exc.adapter == exc.adapter_name:
                exc.adapter = self.name
            raise
        except Exception as exc:  # noqa: BLE001 - model text must never crash a program untyped
            raise AdapterParseError(
                adapter_name=type(self).__name__,
                adapter=self.name,
                signature=signature,
                lm_response=completion,
                message=f"The parser raised {type(exc).__name__}: {_bounded(exc)}",
            ) from exc

    def _trace(
        self,
        signature: type[Signature],
        inputs: dict[str, Any] | None,
        messages: Messages | None,
        completion: Completion,
        lm: Any,
        lm_kwargs: dict[str, Any],
        outputs: dict[str, Any] | None,
        error: str | None,
    ) -> None:
        state = _settings.current()
        sink = state.trace_sink
        if sink is None:
            return
        predictor = current_predictor()
        sink.append(
            TraceRecord(
                predictor_name=getattr(predictor, "_name", None) or "self",
                signature=signature.signature,
                inputs=dict(inputs or {}),
                messages=messages or [],
                completion=completion.text or "",
                model=completion.model or getattr(lm, "model", ""),
                adapter=self.name,
                outputs=outputs,
                error=error,
                prompt_token_ids=completion.prompt_token_ids,
                completion_token_ids=completion.token_ids,
                logprobs=completion.logprobs,
                finish_reason=completion.finish_reason,
                example_id=state.example_id,
                rollout_id=lm_kwargs.get("rollout_id", state.rollout_id),
                lm_kwargs={k: v for k, v in lm_kwargs.items() if k != "rollout_id"},
                served_by=completion.served_by,
                predictor=predictor,
            )
        )

    # ---- formatting -------------------------------------------------------------------------------
    @with_callbacks
    def format(
        self, signature: type[Signature], demos: list[dict[str, Any]], inputs: dict[str, Any]
    ) -> Messages:
        """The messages for one call: system message, demos as user/assistant turns, conversation
        history (a ``dspy.History`` input) as earlier turns, then the current inputs."""
        inputs_copy = dict(inputs)
        history_field_name = self._get_history_field_name(signature)
        if history_field_name:
            signature_without_history = signature.delete(history_field_name)
            conversation_history = self.format_conversation_history(
                signature_without_history, history_field_name, inputs_copy
            )
        messages: Messages = [
            {
                "role": "system",
                "content": self.memo(signature, "system", lambda: self.format_system_message(signature)),
            }
        ]
        messages.extend(self.format_demos(signature, demos))
        if history_field_name:
            content = self.format_user_message_content(
                signature_without_history, inputs_copy, main_request=True
            )
            messages.extend(conversation_history)
        else:
            content = self.format_user_message_content(signature, inputs_copy, main_request=True)
        if content:
            messages.append({"role": "user", "content": content})
        return split_custom_type_messages(messages)

    def format_system_message(self, signature: type[Signature]) -> str:
        return (
            f"{self.format_field_description(signature)}\n"
            f"{self.format_field_structure(signature)}\n"
            f"{self.format_task_description(signature)}"
        )

    def format_field_description(self, signature: type[Signature]) -> str:
        """The system message's description of the input and output fields."""
        raise NotImplementedError

    def format_field_structure(self, signature: type[Signature]) -> str:
        """The system message's statement of how inputs are given and outputs must be written."""
        raise NotImplementedError

    def format_task_description(self, signature: type[Signature]) -> str:
        """The system message's task: in most adapters, the signature's instructions."""
        raise NotImplementedError

    def format_user_message_content(
        self,
        signature: type[Signature],
        inputs: dict[str, Any],
        prefix: str = "",
        suffix: str = "",
        main_request: bool = False,
    ) -> str:
        raise NotImplementedError

    def format_assistant_message_content(
        self,
        signature: type[Signature],
        outputs: dict[str, Any],
        missing_field_message: str | None = None,
    ) -> str:
        raise NotImplementedError

    def format_demos(self, signature: type[Signature], demos: list[Any]) -> Messages:
        """Few-shot examples as user/assistant turns. Incomplete demos (some field missing) come first,
        marked as such; a demo with no input or no output field at all is skipped."""
        complete_demos = []
        incomplete_demos = []
        for index, demo in enumerate(demos):
            if not isinstance(demo, (dict, Example)):
                # DSPy would test `field in demo` on it (true for substrings of a str): a bug, said at once.
                raise DemoError(f"demo #{index} must be an Example or dict, got {type(demo).__name__}")
            is_complete = all(k in demo and demo[k] is not None for k in signature.fields)
            has_input = any(k in demo for k in signature.input_fields)
            has_output = any(k in demo for k in signature.output_fields)
            if is_complete:
                complete_demos.append(demo)
            elif has_input and has_output:
                incomplete_demos.append(demo)
            else:
                logger.debug(
                    "demo #%d has no input or no output field of %s; it is left out", index, signature
                )
        messages: Messages = []
        for demo in incomplete_demos:
            messages.append(
                {
                    "role": "user",
                    "content": self.format_user_message_content(
                        signature, demo, prefix=_INCOMPLETE_DEMO_PREFIX
                    ),
                }
            )
            messages.append(
                {
                    "role": "assistant",
                    "content": self.format_assistant_message_content(
                        signature, demo, missing_field_message="Not supplied for this particular example. "
                    ),
                }
            )
        for demo in complete_demos:
            messages.append({"role": "user", "content": self.format_user_message_content(signature, demo)})
            messages.append(
                {
                    "role": "assistant",
                    "content": self.format_assistant_message_content(
                        signature,
                        demo,
                        missing_field_message="Not supplied for this conversation history message. ",
                    ),
                }
            )
        return messages

    def _get_history_field_name(self, signature: type[Signature]) -> str | None:
        for name, field in signature.input_fields.items():
            if field.annotation == History:
                return name
        return None

    def _get_tool_call_input_field_name(self, signature: type[Signature]) -> str | None:
        tool = loaded_type("Tool")
        if tool is None:
            return None
        for name, field in signature.input_fields.items():
            annotation = field.annotation
            if get_origin(annotation) is list and annotation.__args__[0] == tool:
                return name
            if annotation == tool:
                return name
        return None

    def _get_tool_call_output_field_name(self, signature: type[Signature]) -> str | None:
        for name, field in signature.output_fields.items():
            if is_type(field.annotation, "ToolCalls"):
                return name
        return None

    def format_conversation_history(
        self, signature: type[Signature], history_field_name: str, inputs: dict[str, Any]
    ) -> Messages:
        """The turns of the ``History`` input as user/assistant messages (native ``tool`` messages for
        tool calls with results, when native function calling is on); removes it from ``inputs``."""
        history = inputs.get(history_field_name)
        conversation_history = _history_messages(history)
        if conversation_history is None:
            inputs.pop(history_field_name, None)
            return []
        messages: Messages = []
        for message in conversation_history:
            tool_call_field_name, tool_calls = _tool_calls_from_message(message)
            tool_call_results = None
            if tool_calls is not None and tool_calls.tool_call_results is not None:
                tool_call_results = loaded_type("ToolCallResults").model_validate(
                    tool_calls.tool_call_results
                )

            user_content = self.format_user_message_content(signature, message)
            if user_content:
                messages.append({"role": "user", "content": user_content})

            if self.use_native_function_calling and tool_calls is not None:
                content_signature = signature
                for name, field in signature.output_fields.items():
                    if is_type(field.annotation, "ToolCalls") or message.get(name) is None:
                        content_signature = content_signature.delete(name)
                content = (
                    self.format_assistant_message_content(content_signature, message)
                    if content_signature.output_fields
                    else ""
                )
                if tool_call_results is not None:
                    tool_call_ids = [tool_call.id for tool_call in tool_calls.tool_calls]
                    result_ids = [result.call_id for result in tool_call_results.tool_call_results]
                    if tool_call_ids != result_ids or not all(tool_call_ids):
                        tool_call_results = None
                if content or tool_call_results is not None:
                    assistant_message: dict[str, Any] = {"role": "assistant", "content": content or None}
                    if tool_call_results is not None:
                        assistant_message["tool_calls"] = [
                            _tool_call_as_openai_message_tool_call(tool_call)
                            for tool_call in tool_calls.tool_calls
                        ]
                    messages.append(assistant_message)
                if tool_call_results is not None:
                    for result in tool_call_results.tool_call_results:
                        messages.append(
                            {
                                "role": "tool",
                                "tool_call_id": result.call_id,
                                "name": result.name,
                                "content": _tool_result_content(result.value),
                            }
                        )
                continue

            assistant_values = message
            if tool_call_field_name is not None and tool_call_results is not None:
                assistant_values = dict(message)
                assistant_values[tool_call_field_name] = tool_calls.model_copy(
                    update={"tool_call_results": None}
                )
            assistant_content = self.format_assistant_message_content(signature, assistant_values)
            if assistant_content:
                messages.append({"role": "assistant", "content": assistant_content})
            if tool_call_results is not None:
                content = self.format_user_message_content(
                    _tool_call_results_signature(), {"tool_call_results": tool_call_results}
                )
                messages.append({"role": "user", "content": content})
        del inputs[history_field_name]
        return messages

    def parse(self, signature: type[Signature], completion: str) -> dict[str, Any]:
        """The output field values in ``completion``; raises ``AdapterParseError`` when they are not there."""
        raise NotImplementedError

    def format_finetune_data(
        self, signature: type[Signature], demos: list[Any], inputs: dict[str, Any], outputs: dict[str, Any]
    ) -> dict[str, list[Any]]:
        """One chat fine-tuning row: the call's messages plus the assistant message with ``outputs``."""
        messages = self.format(signature=signature, demos=demos, inputs=inputs)
        content = self.format_assistant_message_content(signature=signature, outputs=outputs)
        return {"messages": [*messages, {"role": "assistant", "content": content}]}


# ---- calling the LM ---------------------------------------------------------------------------------


def _calls_generate(lm: Any) -> bool:
    """dspylite's LMs answer ``__call__`` through ``generate``; calling that directly keeps token ids,
    logprobs and finish reasons. A subclass overriding ``__call__`` gets its override called."""
    if not callable(getattr(lm, "generate", None)):
        return False
    call = next(
        (klass.__dict__["__call__"] for klass in type(lm).__mro__ if "__call__" in klass.__dict__), None
    )
    # No __call__ at all: an object that only implements dspylite's generate() protocol (a wrapper).
    return call is None or bool(getattr(call, "_dspylite_calls_generate", False))


def _generate_kwargs(lm_kwargs: dict[str, Any]) -> tuple[int, int | None, dict[str, Any]]:
    state = _settings.current()
    kwargs = {**state.lm_kwargs, **lm_kwargs}
    n = kwargs.pop("n", 1) or 1
    rollout_id = kwargs.pop("rollout_id", state.rollout_id)
    return n, rollout_id, kwargs


def call_lm(lm: Any, messages: Messages, lm_kwargs: dict[str, Any]) -> list[Completion]:
    """Call ``lm`` on ``messages``; every choice as a ``Completion``."""
    if _calls_generate(lm):
        n, rollout_id, kwargs = _generate_kwargs(lm_kwargs)
        return lm.generate(messages, n=n, rollout_id=rollout_id, **kwargs)
    outputs = lm(messages=messages, **lm_kwargs)
    return [Completion.from_output(output, model=getattr(lm, "model", "")) for output in outputs]


async def acall_lm(lm: Any, messages: Messages, lm_kwargs: dict[str, Any]) -> list[Completion]:
    if _calls_generate(lm):
        n, rollout_id, kwargs = _generate_kwargs(lm_kwargs)
        # The request runs in a worker thread, with this context's settings.
        return await asyncio.to_thread(lm.generate, messages, n=n, rollout_id=rollout_id, **kwargs)
    outputs = await lm.acall(messages=messages, **lm_kwargs)
    return [Completion.from_output(output, model=getattr(lm, "model", "")) for output in outputs]


# ---- helpers ------------------------------------------------------------------------------------------


def split_custom_type_messages(messages: Messages) -> Messages:
    """User messages whose text carries custom-type markers (an ``Image``, a ``Document``) become
    lists of OpenAI content parts; every other message is left as it is."""
    if not any(
        m.get("role") == "user"
        and isinstance(m.get("content"), str)
        and CUSTOM_TYPE_START_IDENTIFIER in m["content"]
        for m in messages
    ):
        return messages
    from dspylite.adapters.types.base_type import split_message_content_for_custom_types

    return split_message_content_for_custom_types(messages)


def _bounded(exc: BaseException, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


def _history_messages(history: Any) -> list[dict[str, Any]] | None:
    if history is None:
        return None
    if isinstance(history, History):
        return history.messages
    if isinstance(history, dict) and isinstance(history.get("messages"), list):
        return history["messages"]  # an Example's toDict() form
    messages = getattr(history, "messages", None)
    if isinstance(messages, list):
        return messages
    raise TypeError(f"a History input must be dspy.History(messages=[...]), got {type(history).__name__}")


_TOOL_CALL_RESULTS_SIGNATURE: list[type[Signature]] = []


def _tool_call_results_signature() -> type[Signature]:
    if not _TOOL_CALL_RESULTS_SIGNATURE:
        results_type = loaded_type("ToolCallResults")
        _TOOL_CALL_RESULTS_SIGNATURE.append(
            make_signature({"tool_call_results": (results_type, InputField())})
        )
    return _TOOL_CALL_RESULTS_SIGNATURE[0]


def _provider_value(value: Any, key: str, default: Any = None) -> Any:
    if isinstance(value, dict):
        return value.get(key, default)
    return getattr(value, key, default)


def _provider_tool_call_to_tool_call_dict(tool_call: Any) -> dict[str, Any]:
    from dspylite.utils import lenient_json

    function = _provider_value(tool_call, "function", {}) or {}
    # Responses API tool calls carry `arguments` at the top level rather than under `function`.
    arguments = _provider_value(function, "arguments", None) or _provider_value(tool_call, "arguments", {})
    if isinstance(arguments, str):
        parsed_arguments = lenient_json.loads(arguments)
        parsed_arguments = parsed_arguments if isinstance(parsed_arguments, dict) else {}
    elif isinstance(arguments, dict):
        parsed_arguments = arguments
    else:
        parsed_arguments = {}
    return {
        # Responses API items carry an item id ("fc_...") and the call_id results must reference.
        "id": _provider_value(tool_call, "call_id") or _provider_value(tool_call, "id"),
        "name": _provider_value(function, "name") or _provider_value(tool_call, "name"),
        "args": parsed_arguments,
    }


def _tool_calls_from_message(message: dict[str, Any]) -> tuple[str | None, Any]:
    tool_calls_type = loaded_type("ToolCalls")
    for name, value in message.items():
        if tool_calls_type is not None and isinstance(value, tool_calls_type):
            return name, value
        if isinstance(value, dict) and "tool_calls" in value:
            if tool_calls_type is None:
                from dspylite.adapters.types.tool import ToolCalls as tool_calls_type
            return name, tool_calls_type.model_validate(value)
    return None, None


def _tool_result_content(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(serialize_for_json(value), ensure_ascii=False)


def _tool_call_as_openai_message_tool_call(tool_call: Any) -> dict[str, Any]:
    return {
        "id": tool_call.id,
        "type": "function",
        "function": {
            "name": tool_call.name,
            "arguments": json.dumps(serialize_for_json(tool_call.args), ensure_ascii=False),
        },
    }


__all__ = ["Adapter", "Messages", "acall_lm", "call_lm"]
