"""``Teleprompter``: DSPy's base class for optimizers (``compile(student, *, trainset, ...)``)."""

from __future__ import annotations

from abc import ABCMeta
from typing import Any


class Teleprompter(metaclass=ABCMeta):  # noqa: B024 - ABCMeta for __subclasshook__, not abstract methods
    """Subclass and implement ``compile``. Every dspylite optimizer counts as a Teleprompter
    (``isinstance(opt, Teleprompter)``): any class with a ``compile`` method does."""

    def compile(
        self, student: Any, *, trainset: list, teacher: Any = None, valset: list | None = None, **kwargs: Any
    ):
        raise NotImplementedError(f"{type(self).__name__} must implement compile(student, *, trainset, ...)")

    def get_params(self) -> dict[str, Any]:
        """The optimizer's settings (its attributes), e.g. for logging."""
        return dict(self.__dict__)

    @classmethod
    def __subclasshook__(cls, other: type) -> Any:
        if cls is Teleprompter and callable(getattr(other, "compile", None)):
            from dspylite.modules.module import Module

            # A program with a compile() method is not an optimizer.
            return not issubclass(other, Module)
        return NotImplemented


__all__ = ["Teleprompter"]
