"""GRPO's policy update over the processes ``accelerate launch`` (or ``torchrun``) started.

    accelerate launch --multi_gpu --num_processes 4 -m dspylite.cli grpo configs/grpo.yaml

Rank 0 runs the whole job as in one process: the server connection, rollouts, groups, validation,
publishing, checkpoints and metrics. The other ranks ("workers") only hold a replica of the policy and
join its updates. Rank 0 drives them with commands it broadcasts (``torch.distributed``'s
``broadcast_object_list``: in-process transport between the ranks of one job, never saved):

- ``load``: build the policy with rank 0's arguments (``rl.policy.Policy.load``); every rank then
  copies rank 0's LoRA weights, so the replicas start identical;
- ``update``: the step's samples (token ids and advantages only; traces stay on rank 0). Every rank
  trains on its share (whole examples, balanced by tokens: ``shard_indices``) with the loss divided by
  the normaliser of the whole step, the LoRA gradients are summed over ranks (one ``all_reduce`` of a
  flat buffer: LoRA is small), and every rank takes the same clipped AdamW step, so the update equals
  the single-process one at the same global batch up to float summation order;
- ``sync``: copy rank 0's weights and optimizer moments (after a resume loaded a checkpoint there);
- ``stop``: leave the loop (rank 0 sends it when the job ends, also when it fails).

A single process (no ``WORLD_SIZE`` > 1 in the environment) never imports torch.distributed here and
runs the update exactly as before. On GPUs the backend is NCCL, one GPU per rank (``LOCAL_RANK``
indexes the visible ones: ``server.train_devices``); on CPU it is gloo.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from dspylite.errors import ConfigError, TrainingError

logger = logging.getLogger(__name__)

# Workers wait for rank 0's next command through whole rollout and validation phases (with vLLM
# starting first, many minutes), far past torch's 30-minute default. A failed rank 0 does not leave
# them waiting this long: the launcher (torchrun's agent, under accelerate launch too) stops the rest.
WAIT_FOR_MAIN = timedelta(hours=12)


def launched_world_size() -> int:
    """How many processes the launcher started (1 for a plain run). Reads the environment only."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def launched_rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def check_launch(cfg: Any, world_size: int) -> None:
    """Refuse GRPO settings that cannot work over ``world_size`` processes, naming what to change."""
    if world_size <= 1:
        return
    per_step = cfg.examples_per_step
    if per_step % world_size:
        lower = per_step - per_step % world_size
        choices = " or ".join(str(n) for n in (lower, lower + world_size) if n > 0)
        raise ConfigError(
            f"grpo.examples_per_step={per_step} does not split evenly over {world_size} processes "
            f"(each trains on the groups of examples_per_step / processes examples): set "
            f"grpo.examples_per_step to a multiple of {world_size} ({choices}), or launch with a "
            f"--num_processes that divides {per_step}"
        )
    if cfg.device.startswith("cuda:"):
        raise ConfigError(
            f"grpo.device={cfg.device!r} would put all {world_size} processes on one GPU: use grpo.device=auto "
            "(or cuda), so each process trains on its own GPU (LOCAL_RANK), and server.train_devices to pick them"
        )


@dataclass
class ProcessGroup:
    rank: int
    world_size: int
    local_rank: int
    backend: str  # nccl or gloo
    stopped: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def comm_device(self) -> Any:
        """Where collective buffers live: this rank's GPU for NCCL, the CPU for gloo."""
        import torch

        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def broadcast(self, message: Any = None) -> Any:
        """Rank 0's ``message`` on every rank (rank 0 passes it, the others get it)."""
        import torch.distributed as dist

        box = [message if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.comm_device if self.backend == "nccl" else None)
        return box[0]

    def sum_(self, tensor: Any) -> Any:
        """In-place sum over the ranks of a tensor on ``comm_device``."""
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor


_GROUP: ProcessGroup | None = None


def active() -> ProcessGroup | None:
    """The process group GRPO trains over, or None in a single process."""
    return _GROUP


def init_from_env(cfg: Any) -> ProcessGroup | None:
    """Join the launcher's processes (once); None when there is only one. ``cfg``: the GRPOConfig."""
    global _GROUP
    world = launched_world_size()
    if world <= 1:
        return None
    if _GROUP is not None:
        return _GROUP
    check_launch(cfg, world)
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    use_cuda = cfg.device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        visible = torch.cuda.device_count()
        if local_rank >= visible:
            raise TrainingError(
                f"process {local_rank} of {world} on this machine has no GPU: {visible} visible. Launch with "
                f"--num_processes {visible}, or list one GPU per process in server.train_devices"
            )
        torch.cuda.set_device(local_rank)
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=WAIT_FOR_MAIN)
    _GROUP = ProcessGroup(dist.get_rank(), dist.get_world_size(), local_rank, backend)
    logger.info("GRPO: process %d of %d (%s)", _GROUP.rank, _GROUP.world_size, backend)
    return _GROUP


def stop_workers() -> None:
    """Rank 0: tell the workers to leave their loop (idempotent); then leave the process group."""
    global _GROUP
    group = _GROUP
    if group is None:
        return
    if group.is_main and not group.stopped:
        group.broadcast(("stop",))
        group.stopped = True
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    _GROUP = None


def run_worker(cfg: Any) -> None:
    """A rank other than 0: serve rank 0's policy commands until it sends ``stop``."""
    from rl.policy import Policy

    group = init_from_env(cfg)
    if group is None or group.is_main:
        raise TrainingError("run_worker is for ranks other than 0 of a launched job (WORLD_SIZE > 1)")
    policy: Policy | None = None
    try:
        while True:
            command = group.broadcast()
            kind = command[0]
            if kind == "stop":
                group.stopped = True
                return
            if kind == "load":
                policy = Policy.load(**command[1])
            elif policy is None:
                raise TrainingError(f"rank {group.rank}: got {kind!r} before the policy was loaded")
            elif kind == "update":
                _, samples, temperature, learning_rate = command
                policy.update_shard(samples, temperature=temperature, learning_rate=learning_rate)
            elif kind == "sync":
                policy.copy_from_main()
            else:
                raise TrainingError(f"rank {group.rank}: unknown command {kind!r} from rank 0")
    finally:
        import torch.distributed as dist

        global _GROUP
        if dist.is_initialized():
            dist.destroy_process_group()
        _GROUP = None


def wire_samples(samples: Sequence[Any]) -> list[Any]:
    """What the workers need of each sample: ids, advantage and example (no trace, no logprobs)."""
    import dataclasses

    return [dataclasses.replace(s, trace=None, logprobs=None) for s in samples]


def shard_indices(samples: Sequence[Any], rank: int, world_size: int) -> list[int]:
    """The indices of ``samples`` rank ``rank`` trains on.

    An example's samples stay on one rank (its K completions share prompts, which a batch runs once);
    examples go to the least loaded rank, largest first (tokens of prompt + completion), so the ranks
    finish their forward/backward passes at about the same time. Deterministic: every rank computes
    the same split from the same list.
    """
    units: dict[str, list[int]] = {}
    for i, sample in enumerate(samples):
        units.setdefault(str(sample.example_key), []).append(i)

    def cost(unit: list[int]) -> int:
        return sum(len(samples[i].prompt_token_ids) + len(samples[i].completion_token_ids) for i in unit)

    ordered = sorted(units.values(), key=lambda unit: (-cost(unit), unit[0]))
    loads = [0] * world_size
    mine: list[int] = []
    for unit in ordered:
        target = min(range(world_size), key=lambda r: (loads[r], r))
        loads[target] += cost(unit)
        if target == rank:
            mine += unit
    return sorted(mine)
