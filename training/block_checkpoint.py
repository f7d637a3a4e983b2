"""Gradient checkpointing of a transformer's blocks, switched on for the duration of a ``with``.

Inside a checkpointed denoising step the backward pass recomputes that step; with its blocks also
checkpointed, only each block's inputs are kept and one block's activations exist at a time, so a
30–40-block video transformer trains in the memory of a few blocks. Blocks checkpoint only while
gradient is enabled: the frozen branches and the pre-gate steps run as usual.

A block may depend on state that exists only during the model call that ran it (ComfyUI's gate installs
the adapter's weight functions per call). Its recomputation happens later, inside backward, so
``recompute_state(block)`` is called at forward time and must return a context-manager factory that
re-creates that state around the recomputation; without it the block would be recomputed without the
adapter (PyTorch's checkpoint check catches that as a different number of saved tensors).
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Iterator

import torch
from torch.utils.checkpoint import checkpoint

# Verified: Wan's ``blocks`` (the adapter trained with and without block checkpointing is the same).
# Not yet: HunyuanVideo's ``double_blocks`` / ``single_blocks`` fail PyTorch's recomputation check ("different
# metadata": the first saved tensor is the qkv LoRA's ``up`` in the forward, an image-stream activation in the
# recomputation) even with the adapter restored; they are left unwrapped (step checkpointing still applies).
BLOCK_LISTS = ("blocks",)
RecomputeState = Callable[[torch.nn.Module], Callable[[], ContextManager]]


@contextlib.contextmanager
def checkpointed_blocks(model: torch.nn.Module, enabled: bool = True,
                        recompute_state: RecomputeState | None = None) -> Iterator[int]:
    """Wrap every block of ``model``'s block lists in non-reentrant checkpointing; yields how many."""
    patched = []
    if enabled:
        for name in BLOCK_LISTS:
            blocks = getattr(model, name, None)
            if not isinstance(blocks, torch.nn.ModuleList):
                continue
            for block in blocks:
                previous = block.__dict__.get("forward")
                original = block.forward

                def forward(*args, _run=original, _block=block, **kwargs):
                    if not torch.is_grad_enabled():
                        return _run(*args, **kwargs)
                    restore = recompute_state(_block) if recompute_state else contextlib.nullcontext
                    return checkpoint(_run, *args, use_reentrant=False,
                                      context_fn=lambda: (contextlib.nullcontext(), restore()), **kwargs)

                block.forward = forward
                patched.append((block, previous))
    try:
        yield len(patched)
    finally:
        for block, previous in patched:
            if previous is None:
                del block.forward
            else:
                block.forward = previous
