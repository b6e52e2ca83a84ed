"""The weight-optimizer type: what BetterTogether and the jobs rely on from BootstrapFinetune and GRPO.

    class WeightOptimizer(Teleprompter):
        backend     # the serving.backend.Backend versions are published into (None until found)
        published   # adapter name -> directory of what the last compile published and bound
        def compile(self, student, *, trainset, teacher=None, valset=None): ...

Callers test ``isinstance(optimizer, WeightOptimizer)`` and read these attributes, nothing private.
``find_backend`` is how an optimizer given no backend finds one: on the LM it was given, on the
program's LMs, on the configured LM (``backend.lm()`` carries it), or, as DSPy's BootstrapFinetune
infers its provider from the LM, a connection to the server that LM talks to.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any

from dspylite import settings as _settings
from dspylite.errors import OptimizerError
from dspylite.teleprompt.teleprompt import Teleprompter

if TYPE_CHECKING:
    from serving.backend import Backend


class WeightOptimizer(Teleprompter):
    """An optimizer that trains LoRA weights and serves them (see the module docstring)."""

    backend: Backend | None = None
    published: dict[str, str]

    @abstractmethod
    def compile(
        self, student: Any, *, trainset: Any, teacher: Any = None, valset: Any = None, **kwargs: Any
    ) -> Any:
        """Return a copy of ``student`` bound to the adapter(s) this compile trained and published."""


def find_backend(given: Any, student: Any, who: str) -> Backend:
    """The backend ``who`` trains through: ``given`` (a Backend, or an LM carrying one), else the one
    the program's or the configured LM carries, else a connection to the server that LM talks to."""
    from serving.backend import Backend

    if isinstance(given, Backend):
        return given
    if given is not None and not callable(getattr(given, "generate", None)):
        raise OptimizerError(
            f"{who}: backend= takes a serving.backend.Backend (e.g. Backend(server, run_dir=...)) or an LM "
            f"from backend.lm(), got {type(given).__name__}"
        )
    lms = [given] if given is not None else [p.lm for _, p in student.named_predictors() if p.lm is not None]
    configured = _settings.current().lm
    if configured is not None and given is None:
        lms.append(configured)
    for lm in lms:
        backend = getattr(lm, "backend", None)  # dspylite.LM has it; other LM classes may not
        if isinstance(backend, Backend):
            return backend
    for lm in lms:
        api_base = getattr(lm, "api_base", None)
        if api_base:
            return Backend.connect(api_base, api_key=getattr(lm, "api_key", None))
    raise OptimizerError(
        f"{who} needs the vLLM that will serve the adapter: pass a serving.backend.Backend "
        "(Backend.connect('http://host:port/v1', run_dir=...)), or configure an LM that carries one "
        "(backend.lm()) or whose api_base is that server"
    )
