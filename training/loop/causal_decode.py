"""Decoding a causal video VAE with gradient in bounded memory.

Causal video VAEs (Wan 2.1 / 2.2) decode one latent frame at a time, carrying a *feature cache* from one
latent frame to the next: for every causal convolution, the last input frames it saw. Plain autograd over
such a decode keeps every layer's activations of every latent frame up to the last reward frame until
backward: at 81 frames × 832×480 that is tens of GB, the peak of a training step.

``causal_decode`` walks the latent frames itself and offers three ways to carry the gradient:

- ``checkpointed`` (exact, the default): each latent frame's decoder pass runs under
  ``torch.utils.checkpoint`` and is recomputed in backward. Between passes only the decoder's own cache
  (a couple of frames per causal convolution) and the frames asked for are kept, and backward holds one
  latent frame's activations at a time. The gradient is the plain decode's (same operations, recomputed).
  Costs one more decoder forward per latent frame in backward.
- ``truncated`` (approximate, least memory and compute): the gradient does not flow through the feature
  cache from one latent frame into the next; latent frames holding no requested pixel frame are decoded
  without gradient, those holding one are checkpointed. The decoded pixels are identical; the gradient of
  a reward frame reaches only its own latent frame (the part through the earlier frames' cache is dropped).
- ``plain``: every pass under ordinary autograd (today's decode; fastest, most memory).

This module is plain torch: the caller supplies ``step(i, cache)`` that decodes latent frame ``i`` given the
VAE's cache list and updates that list in place (what Wan's ``Decoder3d`` does with ``feat_cache``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

from ..latent_geometry import latent_frame_of
from ..logs import pack_logger

log = pack_logger(__name__)

DECODE_MODES = ("checkpointed", "truncated", "plain")
Step = Callable[[int, list], torch.Tensor]


def _pass(step: Step, i: int, cache: list) -> tuple[torch.Tensor, list]:
    """One latent frame: a fresh copy of the cache (the step mutates it; a recomputation must see the input)."""
    cache = list(cache)
    return step(i, cache), cache


def _detached(cache: list) -> list:
    return [c.detach() if isinstance(c, torch.Tensor) else c for c in cache]


def causal_decode(step: Step, num_latent_frames: int, cache_slots: int, needed: set[int],
                  mode: str = "checkpointed") -> dict[int, torch.Tensor]:
    """Decode latent frames ``0 .. num_latent_frames-1`` in order; returns the outputs of the ``needed`` ones.

    ``step(i, cache)`` decodes latent frame ``i`` with the cache list (``cache_slots`` entries, ``None`` at the
    start) and updates the list in place. Outputs of latent frames not in ``needed`` are dropped at once.
    """
    if mode not in DECODE_MODES:
        raise ValueError(f"decode_gradient: got {mode!r}, expected one of {DECODE_MODES}")
    cache: list = [None] * cache_slots
    outputs: dict[int, torch.Tensor] = {}
    grad = torch.is_grad_enabled()
    for i in range(num_latent_frames):
        if not grad or mode == "plain":
            out, cache = _pass(step, i, cache)
        elif mode == "checkpointed":
            out, cache = checkpoint(_pass, step, i, cache, use_reentrant=False)
        elif i in needed:  # truncated: gradient within this latent frame only
            out, cache = checkpoint(_pass, step, i, _detached(cache), use_reentrant=False)
        else:
            with torch.no_grad():
                out, cache = _pass(step, i, cache)
        if i in needed:
            outputs[i] = out
    return outputs


def select_frames(outputs: dict[int, torch.Tensor], frame_indices: list[int],
                  temporal_compression: int = 4) -> torch.Tensor:
    """Pixel frames ``frame_indices`` (in that order) from per-latent-frame outputs [B, C, t, H, W]:
    [B, C, len(frame_indices), H, W]."""
    picked = []
    for f in frame_indices:
        latent, offset = latent_frame_of(f, temporal_compression)
        picked.append(outputs[latent][:, :, offset])
    return torch.stack(picked, dim=2)
