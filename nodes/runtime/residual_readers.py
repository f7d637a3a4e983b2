"""Private copies for the layers that read a block's residual stream directly while the block updates it in place.

LTX-Video's blocks (``comfy.ldm.lightricks.model.BasicTransformerBlock``, 0.3.75 and 0.33) do
``rms_norm(x)`` (ComfyUI's functional norm, ``comfy.ldm.common_dit.rms_norm``) then ``x.addcmul_(...)``, and
``x += attn2(x, ...)``. Both readers save ``x`` for backward; the in-place update then changes what they saved.
Plain autograd would refuse to run backward; the trainer's checkpointed recomputation does not check, so the
gradient would be silently wrong (measured on the tiny LTX-Video: adapter gradient 1.7% off finite differences;
with these copies it agrees to 0.1%, tests/nodes/test_families_training.py). While active, with gradient on, the
functional norm and every block's ``attn2`` run on copies of their input (training/loop/inplace_safety.py); the
copies exist only inside a checkpointed block's recomputation when blocks are checkpointed (the default).
Other families read their residual stream only through norm modules (``norm_inputs_copied``).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

import comfy.ldm.common_dit

from ...training.loop.inplace_safety import copy_if_tensor, inputs_copied


@contextlib.contextmanager
def residual_readers_copied(diffusion_model: torch.nn.Module) -> Iterator[int]:
    """Yields how many modules got copies (0 for a model without LTX-Video's blocks)."""
    readers = [block.attn2 for block in getattr(diffusion_model, "transformer_blocks", ())
               if isinstance(getattr(block, "attn2", None), torch.nn.Module)]
    if not readers:
        yield 0
        return
    functional = comfy.ldm.common_dit.rms_norm

    def rms_norm_on_a_copy(x, *args, **kwargs):
        return functional(copy_if_tensor(x) if torch.is_grad_enabled() else x, *args, **kwargs)

    comfy.ldm.common_dit.rms_norm = rms_norm_on_a_copy
    try:
        with inputs_copied(readers) as count:
            yield count
    finally:
        comfy.ldm.common_dit.rms_norm = functional
