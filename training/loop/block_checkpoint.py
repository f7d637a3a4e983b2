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

Some blocks update their inputs in place (HunyuanVideo's double and single blocks, from Flux's layers, do
``img += ...``). Checkpointing keeps references to a block's inputs for the recomputation, so the block
runs on copies of its tensor arguments: the recomputation then sees the inputs the forward saw.
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Iterator

import torch
from torch.utils.checkpoint import checkpoint

from .inplace_safety import copy_if_tensor

# Wan's and CogVideoX's ``blocks``; HunyuanVideo's (1.0 and 1.5) ``double_blocks`` and ``single_blocks``;
# LTX-Video's ``transformer_blocks`` (tests/nodes/test_trainer_comfy.py: the gradient with block checkpointing equals
# plain autograd's; tests/nodes/test_families_training.py: equals finite differences for the newer families).
BLOCK_LISTS = ("blocks", "double_blocks", "single_blocks", "transformer_blocks")
RecomputeState = Callable[[torch.nn.Module], Callable[[], ContextManager]]


def _on_copies(run: Callable) -> Callable:
    """``run`` called with copies of its tensor arguments, so in-place updates cannot reach the caller's."""
    def wrapped(*args, **kwargs):
        return run(*(copy_if_tensor(a) for a in args), **{k: copy_if_tensor(v) for k, v in kwargs.items()})
    return wrapped


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

                def forward(*args, _run=_on_copies(original), _block=block, **kwargs):
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
