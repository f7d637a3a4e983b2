"""What autograd needs from ComfyUI's objects during a training run: grad mode inside a node, ordinary tensors where
ComfyUI's loaders made inference tensors, and the gate's weight functions kept for a block's recomputation."""

from __future__ import annotations

import contextlib

import torch

import comfy.model_management as mm


@contextlib.contextmanager
def training_mode():
    """What a training run inside a ComfyUI node needs: autograd on (ComfyUI runs nodes under inference mode)
    and ``model_management.in_training`` set, so Wan/Flux rotary embeddings take their differentiable path."""
    was_training = getattr(mm, "in_training", False)
    with torch.inference_mode(False), torch.enable_grad():
        mm.in_training = True
        try:
            yield
        finally:
            mm.in_training = was_training


def make_trainable(module: torch.nn.Module, *holders) -> int:
    """Replace inference-mode tensors (what ComfyUI's loaders create) by ordinary ones of equal value.

    Autograd cannot save inference tensors for backward. Values do not change, so the model stays the
    same for every other node. ``holders`` are plain objects whose tensor attributes are treated the same
    way (e.g. the latent format's mean/std). Returns how many tensors were replaced.
    """
    replaced = 0
    with torch.inference_mode(False):
        for holder in holders:
            for name, value in list(vars(holder).items()):
                if isinstance(value, torch.Tensor) and value.is_inference():
                    setattr(holder, name, value.clone())
                    replaced += 1
        for m in module.modules():
            for name, p in list(m._parameters.items()):
                if p is not None and p.is_inference():
                    m._parameters[name] = torch.nn.Parameter(p.clone(), requires_grad=False)
                    replaced += 1
            for name, b in list(m._buffers.items()):
                if b is not None and b.is_inference():
                    m._buffers[name] = b.clone()
                    replaced += 1
    return replaced


def weight_function_state(block: torch.nn.Module):
    """Snapshot of the weight functions (the gate's adapter) on a block's layers, and a restorer of it.

    Lets a checkpointed block be recomputed in backward with the adapter it ran with, after the model
    call that installed the functions has returned.
    """
    snapshot = [(m, m.weight_function, m.bias_function) for m in block.modules() if hasattr(m, "weight_function")]

    @contextlib.contextmanager
    def restore():
        current = [(m, m.weight_function, m.bias_function) for m, _, _ in snapshot]
        for m, weight_fns, bias_fns in snapshot:
            m.weight_function, m.bias_function = weight_fns, bias_fns
        try:
            yield
        finally:
            for m, weight_fns, bias_fns in current:
                m.weight_function, m.bias_function = weight_fns, bias_fns

    return restore
