"""Data parallel and sharded training on torch.distributed (process group set up by accelerate's PartialState).

Launch N processes with ``torchrun --nproc_per_node N -m personalvideo.scaleout.train CONFIG.toml`` or ``accelerate
launch --multi_gpu --num_processes N -m personalvideo.scaleout.train CONFIG.toml`` (both set RANK / WORLD_SIZE /
LOCAL_RANK); one plain ``python -m personalvideo.scaleout.train CONFIG.toml`` is a world of one. GPUs use NCCL, CPUs
gloo.

- Each rank draws its own prompt, noise and reward frames (the trainer's ``DataParallel.rank``); the adapter's
  initial weights come from the seed alone, so they are the same on every rank.
- After each backward, ``reduce_gradients`` all-reduces the adapter's gradients in one flat buffer and divides by
  the number of ranks that have one (a rank whose step is skipped, e.g. no face or a non-finite value, sends
  zeros and is not counted), so clip and AdamW see the same mean gradient everywhere: the adapters stay equal.
- ``shard_blocks``: FSDP2 ``fully_shard`` on each block of the frozen base model, the adapter's parameters
  left out (``ignored_params``), so they stay whole, replicated tensors under the same reduction. A sharded
  model gathers weights in backward too, so every rank runs a backward every step (``lockstep_backward``).
- ``load_sharded``: the load-time half (torchtitan's / torchtune's recipe): the model is built empty (parameters
  on ``meta``), gets its adapter, is sharded, and only then receives its weights: rank 0 loads the full copy on
  the CPU and ``set_model_state_dict(..., broadcast_from_rank0=True)`` sends it one tensor at a time, each rank
  keeping its shard of a block's weights and a whole copy of the rest (embeddings, head, norms, the adapter).
  While loading no rank but 0 holds a whole block (the steps gather one block at a time, as FSDP2 does), and
  rank 0's whole copy is in CPU memory: a model larger than one device can be trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ..training.logs import pack_logger

log = pack_logger(__name__)
Adapter = TypeVar("Adapter")


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
        """Rank 0: writes resume files, adapters, charts and shows the progress bar."""
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


def shard_blocks(blocks: Iterable[nn.Module], trainable: Iterable[nn.Parameter], run: DistributedRun,
                 root: nn.Module | None = None) -> int:
    """FSDP2-shard each block's frozen weights across the ranks; the ``trainable`` parameters stay whole.

    ``root``: the model holding the blocks, made the FSDP2 root (it coordinates the blocks' gathers and moves
    its buffers to the run's device) with all its own parameters left whole (embeddings, head, norms).
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
    if root is not None:
        from torch.distributed.tensor import DTensor

        fully_shard(root, mesh=mesh, reshard_after_forward=True,
                    ignored_params={p for p in root.parameters() if not isinstance(p, DTensor)} or None)
    run.lockstep_backward = True
    log.info("fsdp: %d blocks sharded over %d ranks", count, run.world_size)
    return count


def load_sharded(empty: nn.Module, full: Callable[[], nn.Module], block_lists: Sequence[str], run: DistributedRun,
                 adapt: Callable[[nn.Module], Adapter] | None = None) -> Adapter | None:
    """Give ``empty`` (a model built with its parameters on ``meta``: accelerate's ``init_empty_weights``) its
    weights as FSDP2 shards, without any rank but 0 holding a whole block.

    ``full()`` is called on rank 0 only and returns the whole model on the CPU, frozen and in its final dtypes.
    ``adapt(model)`` injects the adapter (peft) and returns it; it runs on rank 0's full copy (which draws the
    initial adapter from the seed, as in an unsharded run) and on ``empty`` (whose adapter weights stay on
    ``meta`` until rank 0's arrive). Then ``empty``'s blocks (its attributes ``block_lists``) and the model are
    ``fully_shard``-ed (``shard_blocks``) and ``set_model_state_dict`` broadcasts rank 0's state dict tensor by
    tensor: each rank keeps its shard of every block weight and a whole copy of everything else. Returns the
    adapter of ``empty`` (None without ``adapt``).
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    source = None
    if run.is_main:
        source = full()
        if adapt is not None:
            adapt(source)
    # every rank builds with the dtypes rank 0 loaded (a folder may keep some modules in float32)
    dtypes = [None if source is None else {name: t.dtype for name, t in _tensors(source)}]
    dist.broadcast_object_list(dtypes, src=0)
    empty.requires_grad_(False).eval()
    kind = type(empty).__name__  # before fully_shard makes it an FSDP<kind>
    adapter = adapt(empty) if adapt is not None else None
    _cast(empty, dtypes[0])
    trainable = list(adapter.parameters()) if adapter is not None else []
    shard_blocks([b for name in block_lists for b in getattr(empty, name)], trainable, run, root=empty)
    set_model_state_dict(empty, source.state_dict() if source is not None else {},
                         options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    del source  # rank 0's full copy goes; what the ranks keep is now in ``empty``
    if run.is_main:
        local = sum(_local(p).numel() * p.element_size() for p in empty.parameters())
        log.info("fsdp: %s loaded from rank 0's copy; rank 0 holds %.1f MB of its parameters",
                 kind, local / 2**20)
    return adapter


def _tensors(module: nn.Module):
    yield from module.named_parameters()
    yield from module.named_buffers()


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _cast(module: nn.Module, dtypes: dict[str, torch.dtype]) -> None:
    """Each parameter and buffer of ``module`` in the dtype ``dtypes`` names for it (meta: no data moves)."""
    for prefix, sub in module.named_modules():
        for table in (sub._parameters, sub._buffers):
            for name, t in table.items():
                want = dtypes.get(f"{prefix}.{name}" if prefix else name)
                if t is not None and want is not None and t.dtype != want:
                    t.data = t.data.to(want)
