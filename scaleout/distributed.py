"""Data parallel and sharded training on torch.distributed (process group set up by accelerate's PartialState).

Launch N processes with ``torchrun --nproc_per_node N -m scaleout.train CONFIG.toml`` or
``accelerate launch --multi_gpu --num_processes N -m scaleout.train CONFIG.toml`` (both set RANK / WORLD_SIZE /
LOCAL_RANK); one plain ``python -m scaleout.train CONFIG.toml`` is a world of one. GPUs use NCCL, CPUs gloo.

- Each rank draws its own prompt, noise and reward frames (the trainer's ``DataParallel.rank``); the adapter's
  initial weights come from the seed alone, so they are the same on every rank.
- After each backward, ``reduce_gradients`` all-reduces the adapter's gradients in one flat buffer and divides by
  the number of ranks that have one (a rank whose step is skipped, e.g. no face or a non-finite value, sends
  zeros and is not counted), so clip and AdamW see the same mean gradient everywhere: the adapters stay equal.
- ``shard_blocks``: FSDP2 ``fully_shard`` on each block of the frozen base model, the adapter's parameters
  left out (``ignored_params``), so they stay whole, replicated tensors under the same reduction. A sharded
  model gathers weights in backward too, so every rank runs a backward every step (``lockstep_backward``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class DistributedRun:
    """This process's place in the run; implements ``training.loop.trainer.DataParallel``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    lockstep_backward: bool = False  # set by shard_blocks

    @property
    def is_main(self) -> bool:
        """Rank 0: writes checkpoints, adapters, charts and shows the progress bar."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def reduce_gradients(self, params, skipped: str) -> str:
        """Mean of the adapter gradients over the ranks that have one; "" when the step may update."""
        if not self.active:
            return skipped
        tensors = list(params.parameters())
        flat = torch.cat([torch.zeros(p.numel(), device=p.device, dtype=torch.float32) if skipped or p.grad is None
                          else p.grad.detach().reshape(-1).float() for p in tensors]
                         + [torch.ones(1, device=tensors[0].device) * (0.0 if skipped else 1.0)])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        contributing = int(flat[-1].item())
        if contributing == 0:
            return skipped or "no rank had a gradient"
        if skipped:  # a non-finite value is worth a warning (the trainer counts it only when all ranks skip)
            (log.warning if skipped.startswith("non-finite") else log.info)(
                "rank %d: own step skipped (%s); applying the mean of %d other rank(s)", self.rank, skipped,
                contributing)
        flat = flat[:-1] / contributing
        offset = 0
        for p in tensors:
            p.grad = flat[offset:offset + p.numel()].view_as(p).to(p.dtype)
            offset += p.numel()
        return ""

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def init_distributed(cpu: bool = False) -> DistributedRun:
    """Join the process group the launcher describes (or none: a world of one) and pick this rank's device:
    ``cuda:<local rank>`` when CUDA is available and ``cpu`` is off, else the CPU (gloo)."""
    from accelerate import PartialState  # set up once per process: NCCL on GPUs, gloo with cpu=True

    cpu = cpu or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    device = torch.device("cpu") if cpu else state.device
    run = DistributedRun(state.process_index, state.num_processes, state.local_process_index, device)
    if run.active:
        log.info("rank %d of %d on %s (%s)", run.rank, run.world_size, device, dist.get_backend())
    return run


def shard_blocks(blocks: Iterable[nn.Module], trainable: Iterable[nn.Parameter], run: DistributedRun) -> int:
    """FSDP2-shard each block's frozen weights across the ranks; the ``trainable`` parameters stay whole.

    Returns the number of blocks sharded. A world of one has nothing to shard across (returns 0).
    """
    if not run.active:
        log.info("fsdp: one process, nothing to shard across; the model stays whole")
        return 0
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    keep = set(trainable)
    mesh = init_device_mesh(run.device.type, (run.world_size,))
    count = 0
    for block in blocks:
        fully_shard(block, mesh=mesh, reshard_after_forward=True,
                    ignored_params={p for p in block.parameters() if p in keep} or None)
        count += 1
    if count == 0:
        raise ValueError("fsdp: the model has no blocks to shard; turn [compute] fsdp off for this model")
    run.lockstep_backward = True
    log.info("fsdp: %d blocks sharded over %d ranks", count, run.world_size)
    return count
