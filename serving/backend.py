"""The weight backend: what weight optimizers train against, the local counterpart of DSPy's ``lm.finetune``.

    backend = Backend.connect("http://localhost:8000/v1", run_dir="runs/sft")  # a running vLLM
    dspylite.configure(lm=backend.lm())        # an LM that carries its backend (lm.backend)
    tuned = BootstrapFinetune(metric).compile(program, trainset=train)   # finds it on the LM

A weight optimizer needs, besides its training settings, one object that owns:

- ``server``: the serving handle (``VLLMServer`` or ``VLLMConnection``) adapter versions are loaded into;
- ``registry``: the ``AdapterRegistry`` they are registered in (default ``<run_dir>/adapters``);
- ``model_dir``: the base model directory adapters are trained on (default: what the server runs);
- ``serving_dtype``: the precision the server samples in, recorded in every adapter's metadata;
- ``colocation``: what a training phase does to the server on a shared GPU (``serving.colocate``);
- ``run_dir``: where an optimizer writes data, checkpoints, adapters and metrics;
- ``base_lm``: the LM programs are bound through (endpoint, sampling settings, cache).

Its methods are the steps around training: ``training_phase``, ``new_version_name``, ``publish``
(``serving.publish``), ``bind`` and ``serve`` (``serving.binding``, ``serving.reattach``). Training
itself stays in the optimizers (``finetune/``, ``rl/``), which this package never imports.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from dspylite.errors import ConfigError
from dspylite.run_dir import RunDir
from serving.colocate import Colocation
from serving.config import ServerConfig
from serving.connection import VLLMConnection
from serving.registry import AdapterEntry, AdapterRegistry


class Backend:
    """One serving handle, its adapter registry, base model, precision, colocation and run directory.

    Args:
        server: a ``VLLMServer`` or ``LocalReplicas`` (its ``dtype`` becomes ``serving_dtype``) or a
            ``VLLMConnection`` (one server or several).
        run_dir: where optimizers write; None: each compile opens ``runs/<optimizer>-<time>``.
        registry: where versions are registered; default ``<run_dir>/adapters``.
        model_dir: the base model to train on; default ``server.base_model``.
        serving_dtype: the precision the server samples in (vLLM's spelling, e.g. ``bfloat16``);
            default: a ``VLLMServer``'s own ``dtype``, else unknown (None).
        colocation: a ``serving.colocate.Colocation``; default: nothing arranged around training.
        base_lm: the LM bound programs send requests through; it then carries this backend
            (``base_lm.backend``). None: each predictor's own LM or the configured one.
    """

    def __init__(
        self,
        server: VLLMConnection,
        *,
        run_dir: str | os.PathLike[str] | None = None,
        registry: AdapterRegistry | None = None,
        model_dir: str | os.PathLike[str] | None = None,
        serving_dtype: str | None = None,
        colocation: Colocation | None = None,
        base_lm: Any = None,
    ):
        from serving.dtype import normalize_dtype
        from serving.replicas import LocalReplicas
        from serving.server import VLLMServer

        if server is None:
            raise ConfigError("Backend needs a server: a serving.VLLMServer or serving.connect(api_base)")
        self.server = server
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if registry is None and self.run_dir is not None:
            registry = AdapterRegistry(self.run_dir / "adapters")
        self._registry = registry
        self._model_dir = str(model_dir) if model_dir else None
        if serving_dtype is not None:
            serving_dtype = normalize_dtype(serving_dtype, setting="Backend(serving_dtype=...)")
        elif isinstance(server, (VLLMServer, LocalReplicas)):
            serving_dtype = server.dtype  # already vLLM's spelling: VLLMServer resolved server.dtype
        self.serving_dtype = None if serving_dtype == "auto" else serving_dtype
        self.colocation = colocation if colocation is not None else Colocation(server, "off")
        self.base_lm = base_lm
        if base_lm is not None:
            base_lm.backend = self
        self._run: RunDir | None = None

    @classmethod
    def connect(
        cls,
        api_base: str | list[str],
        *,
        api_key: str | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        model_dir: str | os.PathLike[str] | None = None,
        serving_dtype: str | None = None,
    ) -> Backend:
        """A backend on vLLM server(s) already running at ``api_base`` (nothing is started or stopped)."""
        from serving.connection import connect

        return cls(
            connect(api_base, api_key=api_key),
            run_dir=run_dir,
            model_dir=model_dir,
            serving_dtype=serving_dtype,
        )

    @classmethod
    @contextlib.contextmanager
    def open(
        cls,
        model: str | None,
        config: ServerConfig,
        run_dir: str | os.PathLike[str],
        *,
        lm_kwargs: dict[str, Any] | None = None,
        trains: bool = True,
        say: Callable[[str], None] | None = None,
    ) -> Iterator[Backend]:
        """The backend a job trains through, opened from the server schema (``serving.config.ServerConfig``)
        and a run directory: vLLM started on ``model`` (a named source or a checkpoint directory, resolved
        by ``sources.models``) or connected to ``config.api_base``, placed and colocated as the schema
        says (``trains``: whether training shares the machine, which decides ``server.colocate=auto``); the
        adapter registry in ``<run_dir>/adapters``; ``base_lm = server.lm(**lm_kwargs)``. A server
        started here is stopped when the block ends."""
        from serving.launch import open_server, server_model
        from serving.placement import colocation

        kwargs = {"say": say} if say is not None else {}
        model_dir = server_model(model, config, **kwargs)
        with open_server(model_dir, config, run_dir, **kwargs, trains=trains) as server:
            yield cls(
                server,
                run_dir=run_dir,
                model_dir=model_dir or None,  # a remote server without `model`: what it runs
                colocation=colocation(server, config, **kwargs, trains=trains),
                base_lm=server.lm(**(lm_kwargs or {})),
            )

    # ---- what it holds ------------------------------------------------------------------------------
    @property
    def model_dir(self) -> str:
        """The base model directory adapters are trained on (asked from the server when not given)."""
        if self._model_dir is None:
            self._model_dir = str(self.server.base_model)
        return self._model_dir

    @property
    def registry(self) -> AdapterRegistry:
        if self._registry is None:
            raise ConfigError(
                "this Backend has no run_dir, so no adapter registry; use backend.with_run_dir()"
            )
        return self._registry

    @property
    def run(self) -> RunDir:
        """The run directory, created on first use."""
        if self.run_dir is None:
            raise ConfigError(
                "this Backend has no run_dir; use backend.with_run_dir() or Backend(run_dir=...)"
            )
        if self._run is None:
            self._run = RunDir(self.run_dir)
        return self._run

    def for_run(self, run_dir: str | os.PathLike[str]) -> Backend:
        """The same server, registry, model, colocation and LM, writing to another run directory (a
        stage of a larger job). Versions still go to this backend's registry when it has one."""
        view = Backend(
            self.server,
            run_dir=run_dir,
            registry=self._registry,
            model_dir=self._model_dir,
            colocation=self.colocation,
        )
        view.serving_dtype = self.serving_dtype
        view.base_lm = self.base_lm
        return view

    def with_run_dir(self, name: str) -> Backend:
        """This backend when it has a run directory, else a view writing to ``runs/<name>-<time>``."""
        if self.run_dir is not None:
            return self
        return self.for_run(Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")

    def lm(self, **settings: Any) -> Any:
        """A ``dspylite.LM`` on this backend's server (the base model unless ``model=...``) that carries
        this backend, so ``BootstrapFinetune(metric)`` and ``GRPO(metric)`` find it as DSPy's
        optimizers find ``lm.finetune``."""
        lm = self.server.lm(**settings)
        lm.backend = self
        return lm

    # ---- around training ----------------------------------------------------------------------------
    def training_phase(self, what: str = "training") -> contextlib.AbstractContextManager[None]:
        """Wrap a training phase: on a GPU shared with the server (colocate=sleep) vLLM sleeps meanwhile."""
        return self.colocation.training_phase(what)

    def new_version_name(self, run_name: str) -> str:
        """The next unused ``<run_name>-<n>`` (a version name is never reused: invariant 2)."""
        from serving.publish import fresh_version_name

        return fresh_version_name(self.registry, run_name, self.run.adapters_dir)

    def publish(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        base_model: str | None = None,
        metrics: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AdapterEntry:
        """Register the adapter directory ``path`` as ``name`` and load it into the server by path."""
        from serving.publish import publish_adapter

        return publish_adapter(
            self.server,
            self.registry,
            name,
            path,
            base_model=base_model or self.model_dir,
            metrics=metrics,
            metadata=metadata,
        )

    # ---- programs -----------------------------------------------------------------------------------
    def bind(self, program: Any, adapter_name: str, predictors: Iterable[str] | None = None) -> Any:
        """Point ``program``'s predictors (all, or ``predictors``) at ``adapter_name`` through
        ``base_lm`` (in place; returns the program). See ``serving.binding.bind``."""
        from serving.binding import bind

        return bind(program, adapter_name, lm=self.base_lm, predictors=predictors)

    def serve(
        self,
        program: Any,
        *,
        adapters: dict[str, str] | None = None,
        search_root: str | os.PathLike[str] | None = None,
    ) -> list[str]:
        """Load the adapters ``program`` is bound to that the server lacks: directories from ``adapters``
        (name -> directory), else from registries under ``search_root`` (default: the registry's root)."""
        from serving.reattach import serve_bound_adapters

        if search_root is None and self._registry is not None:
            search_root = self._registry.root
        return serve_bound_adapters(program, self.server, adapters=adapters, search_root=search_root)

    def __repr__(self) -> str:
        return f"Backend({self.server!r}, run_dir={str(self.run_dir) if self.run_dir else None!r})"
