"""Keep checkpointed recomputation correct for models that update their residual stream in place.

HunyuanVideo's blocks (Flux's layers in ComfyUI) do ``img = norm(img) ...; img += attn(...)``. Plain autograd
notices that the tensor the norm saved for backward was changed and refuses to run backward. Checkpointing
recomputes the forward inside backward and does not check, so the norm's backward would read the updated
tensor and the gradient would be silently wrong (measured on the tiny HunyuanVideo: step-checkpointed and
block-checkpointed runs disagreed by up to 1.2% on the text-stream LoRAs, while plain autograd refused).
Giving every normalisation layer a copy of its input while gradient is on makes the saved tensor private
to the norm; the in-place update then changes only the residual stream, as the model meant.
tests/nodes/test_trainer_comfy.py checks the result against plain autograd (which would have raised).

LTX-Video's blocks go further: ``x.addcmul_(...)`` after a functional ``rms_norm(x)`` and ``x += attn2(x, ...)``,
whose query projection saved ``x`` for its weight gradient (1.7% off on the tiny model's adapter gradient,
against finite differences). ``inputs_copied`` gives chosen modules private copies of their tensor arguments;
the functional norm is handled where ComfyUI's function lives (nodes/runtime/residual_readers.py).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def is_norm(module: torch.nn.Module) -> bool:
    """LayerNorm / GroupNorm / RMSNorm, and model-specific norms named ``...Norm`` (e.g. ComfyUI's RMSNorm)."""
    norms = (torch.nn.LayerNorm, torch.nn.GroupNorm, getattr(torch.nn, "RMSNorm", torch.nn.LayerNorm))
    return isinstance(module, norms) or type(module).__name__.endswith("Norm")


def copy_if_tensor(value):
    """A copy of ``value`` if it is a tensor (in-place updates to it then stay private), else ``value``."""
    return value.clone() if isinstance(value, torch.Tensor) else value


def _copy_inputs(module, args, kwargs):
    if not torch.is_grad_enabled():
        return None
    return tuple(copy_if_tensor(a) for a in args), kwargs


@contextlib.contextmanager
def inputs_copied(modules) -> Iterator[int]:
    """While active, each of ``modules`` runs on copies of its positional tensor arguments when gradient is on."""
    handles = [m.register_forward_pre_hook(_copy_inputs, with_kwargs=True) for m in modules]
    try:
        yield len(handles)
    finally:
        for h in handles:
            h.remove()


def norm_inputs_copied(model: torch.nn.Module):
    """While active, every norm layer of ``model`` runs on a copy of its input when gradient is on."""
    return inputs_copied([m for m in model.modules() if is_norm(m)])
