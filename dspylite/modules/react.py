"""ReAct: a tool-using agent over any signature (DSPy's ``dspy.ReAct``).

Ported from DSPy 3.3.1 (MIT License, Copyright (c) 2023 Stanford Future Data Systems); see
THIRD_PARTY_NOTICES.md. Each step an inner ``Predict`` (named ``react``) sees the inputs and the
trajectory so far and picks ``next_thought``, ``next_tool_name`` (one of the tools or ``finish``) and
``next_tool_args``. The tool runs and its result (or its error) becomes the step's observation.
After ``finish`` or ``max_iters`` steps, a ``ChainOfThought`` (named ``extract``) produces the
signature's outputs from the trajectory. A prompt too long for the model's context window drops the
oldest step and tries again (up to three times). The predictor names match DSPy's, so saved
program states line up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

from dspylite import settings as _settings
from dspylite.errors import ContextWindowExceededError
from dspylite.example import Prediction
from dspylite.modules.chain_of_thought import ChainOfThought
from dspylite.modules.module import Module
from dspylite.modules.predict import Predict
from dspylite.signatures import InputField, OutputField, Signature, ensure_signature, make_signature
from dspylite.utils.exceptions import format_error_for_lm

logger = logging.getLogger(__name__)

FINISH = "finish"


def __getattr__(name: str) -> Any:
    if name == "Tool":  # dspy.Tool is a pydantic type: loaded on first use
        from dspylite.adapters.types.tool import Tool

        return Tool
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ReAct(Module):
    """``ReAct("question -> answer", tools=[search, lookup], max_iters=20)``; see the module docstring.

    ``tools`` are functions, callable objects or ``dspy.Tool`` instances.
    """

    def __init__(
        self, signature: str | type[Signature], tools: list[Callable[..., Any]], max_iters: int = 20
    ):
        from dspylite.adapters.types.tool import Tool

        super().__init__()
        self.signature = signature = ensure_signature(signature)
        self.max_iters = max_iters
        tool_list = [t if isinstance(t, Tool) else Tool(t) for t in tools]
        names = [t.name for t in tool_list]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated or FINISH in names:
            # DSPy would keep one of the same-named tools silently (or replace a tool named finish).
            raise ValueError(f"ReAct: tool names must be unique and not {FINISH!r}; got {names}")
        tools_by_name = {tool.name: tool for tool in tool_list}

        inputs = ", ".join(f"`{k}`" for k in signature.input_fields)
        outputs = ", ".join(f"`{k}`" for k in signature.output_fields)
        instr = [f"{signature.instructions}\n"] if signature.instructions else []
        instr.extend(
            [
                f"You are an Agent. In each episode, you will be given the fields {inputs} as input. And you can see your past trajectory so far.",
                f"Your goal is to use one or more of the supplied tools to collect any necessary information for producing {outputs}.\n",
                "To do this, you will interleave next_thought, next_tool_name, and next_tool_args in each turn, and also when finishing the task.",
                "After each tool call, you receive a resulting observation, which gets appended to your trajectory.\n",
                "When writing next_thought, you may reason about the current situation and plan for future steps.",
                "When selecting the next_tool_name and its next_tool_args, the tool must be one of:\n",
            ]
        )
        tools_by_name[FINISH] = Tool(
            func=lambda: "Completed.",
            name=FINISH,
            desc=(
                "Marks the task as complete. That is, signals that all information for producing the outputs, "
                f"i.e. {outputs}, are now available to be extracted."
            ),
            args={},
        )
        for idx, tool in enumerate(tools_by_name.values()):
            instr.append(f"({idx + 1}) {tool}")
        instr.append("When providing `next_tool_args`, the value inside the field must be in JSON format")

        react_signature = (
            make_signature(dict(signature.input_fields), "\n".join(instr))
            .append("trajectory", InputField(), type_=str)
            .append("next_thought", OutputField(), type_=str)
            .append("next_tool_name", OutputField(), type_=Literal[tuple(tools_by_name)])  # type: ignore[misc]
            .append("next_tool_args", OutputField(), type_=dict[str, Any])
        )
        fallback_signature = make_signature(
            {**signature.input_fields, **signature.output_fields}, signature.instructions
        ).append("trajectory", InputField(), type_=str)

        self.tools = tools_by_name
        self.react = Predict(react_signature)
        self.extract = ChainOfThought(fallback_signature)

    def _format_trajectory(self, trajectory: dict[str, Any]) -> str:
        from dspylite.adapters.chat import ChatAdapter

        adapter = _settings.current().adapter or ChatAdapter()
        trajectory_signature = make_signature(f"{', '.join(trajectory.keys())} -> x") if trajectory else None
        if trajectory_signature is None:
            return ""
        return adapter.format_user_message_content(trajectory_signature, trajectory)

    def forward(self, **input_args: Any) -> Prediction:
        trajectory: dict[str, Any] = {}
        max_iters = input_args.pop("max_iters", self.max_iters)
        for idx in range(max_iters):
            try:
                pred = self._call_with_potential_trajectory_truncation(self.react, trajectory, **input_args)
            except ContextWindowExceededError as err:
                logger.warning("Ending the trajectory: %s", format_error_for_lm(err, traceback_frames=5))
                break
            except ValueError as err:
                # An AdapterParseError among them: the failed call is in the traces; the agent answers with what it has.
                logger.warning(
                    "Ending the trajectory: Agent failed to select a valid tool: %s",
                    format_error_for_lm(err, traceback_frames=5),
                )
                break
            trajectory[f"thought_{idx}"] = pred.next_thought
            trajectory[f"tool_name_{idx}"] = pred.next_tool_name
            trajectory[f"tool_args_{idx}"] = pred.next_tool_args
            try:
                trajectory[f"observation_{idx}"] = self.tools[pred.next_tool_name](**pred.next_tool_args)
            except Exception as err:  # the agent sees its mistake and may recover on the next step
                trajectory[f"observation_{idx}"] = (
                    f"Execution error in {pred.next_tool_name}: {format_error_for_lm(err, traceback_frames=5)}"
                )
            if pred.next_tool_name == FINISH:
                break
        extract = self._call_with_potential_trajectory_truncation(self.extract, trajectory, **input_args)
        return Prediction(trajectory=trajectory, **extract)

    async def aforward(self, **input_args: Any) -> Prediction:
        trajectory: dict[str, Any] = {}
        max_iters = input_args.pop("max_iters", self.max_iters)
        for idx in range(max_iters):
            try:
                pred = await self._async_call_with_potential_trajectory_truncation(
                    self.react, trajectory, **input_args
                )
            except ContextWindowExceededError as err:
                logger.warning("Ending the trajectory: %s", format_error_for_lm(err, traceback_frames=5))
                break
            except ValueError as err:
                logger.warning(
                    "Ending the trajectory: Agent failed to select a valid tool: %s",
                    format_error_for_lm(err, traceback_frames=5),
                )
                break
            trajectory[f"thought_{idx}"] = pred.next_thought
            trajectory[f"tool_name_{idx}"] = pred.next_tool_name
            trajectory[f"tool_args_{idx}"] = pred.next_tool_args
            try:
                trajectory[f"observation_{idx}"] = await self.tools[pred.next_tool_name].acall(
                    **pred.next_tool_args
                )
            except Exception as err:
                trajectory[f"observation_{idx}"] = (
                    f"Execution error in {pred.next_tool_name}: {format_error_for_lm(err, traceback_frames=5)}"
                )
            if pred.next_tool_name == FINISH:
                break
        extract = await self._async_call_with_potential_trajectory_truncation(
            self.extract, trajectory, **input_args
        )
        return Prediction(trajectory=trajectory, **extract)

    def _call_with_potential_trajectory_truncation(
        self, module: Module, trajectory: dict[str, Any], **input_args
    ):
        last_error = None
        for _ in range(3):
            try:
                return module(**input_args, trajectory=self._format_trajectory(trajectory))
            except ContextWindowExceededError as err:
                logger.warning(
                    "Trajectory exceeded the context window, truncating the oldest tool call information."
                )
                last_error = err
                trajectory = self.truncate_trajectory(trajectory)
        raise ContextWindowExceededError(
            "The context window was exceeded even after 3 attempts to truncate the trajectory."
        ) from last_error

    async def _async_call_with_potential_trajectory_truncation(
        self, module: Module, trajectory: dict[str, Any], **input_args
    ):
        last_error = None
        for _ in range(3):
            try:
                return await module.acall(**input_args, trajectory=self._format_trajectory(trajectory))
            except ContextWindowExceededError as err:
                logger.warning(
                    "Trajectory exceeded the context window, truncating the oldest tool call information."
                )
                last_error = err
                trajectory = self.truncate_trajectory(trajectory)
        raise ContextWindowExceededError(
            "The context window was exceeded even after 3 attempts to truncate the trajectory."
        ) from last_error

    def truncate_trajectory(self, trajectory: dict[str, Any]) -> dict[str, Any]:
        """Drop the oldest tool call (its thought, tool name, args and observation). Override to truncate
        differently."""
        keys = list(trajectory.keys())
        if len(keys) <= 4:
            raise ContextWindowExceededError(
                "The trajectory is too long so your prompt exceeded the context window, but the trajectory "
                "cannot be truncated because it only has one tool call."
            )
        for key in keys[:4]:
            trajectory.pop(key)
        return trajectory


__all__ = ["ReAct"]
