"""ComfyUI's causal video VAEs as a per-latent-frame ``step`` for training/loop/causal_decode.py.

Wan 2.1's VAE (``comfy.ldm.wan.vae.WanVAE``, also what Wan 2.2 A14B uses) and Wan 2.2's (``vae2_2.WanVAE``,
TI2V-5B) decode as ``x = conv2(z)`` then ``decoder(x[:, :, i:i+1], feat_cache, feat_idx)`` per latent frame
(2.2: ``first_chunk`` on frame 0, then ``unpatchify``). Other VAEs (HunyuanVideo's, LTXV's, ...) are not walked
this way: ``causal_vae_frames`` returns None for them and the caller decodes them whole (plain autograd).

Two decoder cache APIs exist, feature-detected per VAE module:

- ComfyUI 0.3.75 (and 0.33's ``vae2_2``): ``count_conv3d`` slots; every causal layer keeps the last two frames it
  saw (a one-frame input is prefixed with the last frame of the previous cache) as a copy; the decoder returns
  a tensor.
- ComfyUI 0.33's ``vae``: ``count_cache_layers`` slots; a layer keeps ``x[:, :, -2:]`` of its input (a view, one
  frame when the input has one), because its own ``decode`` feeds latent frames in pairs after the first; the
  decoder returns a list of chunks. Walked one latent frame at a time, ``_complete_cache`` does after each pass
  what 0.3.75's layers did inside: a one-frame entry gets the previous entry's last frame in front (a causal
  convolution then sees the same frames as in the pair), and views are copied, so a cache entry does not keep
  the layer's whole activation alive between passes (the memory the walk exists to save).
"""

from __future__ import annotations

import functools

import torch

from ...training.latent_geometry import latent_frame_of
from ...training.loop.causal_decode import causal_decode, select_frames
from ...training.logs import pack_logger

log = pack_logger(__name__)


def _wan_vae_module(first_stage_model):
    """ComfyUI's module defining this Wan VAE class (``comfy.ldm.wan.vae`` or ``.vae2_2``), or None.
    Feature-detected: a ComfyUI version may lack one of them."""
    return _module_of_class(type(first_stage_model))


@functools.lru_cache(maxsize=None)
def _module_of_class(vae_class):
    """Decided once per VAE class: the decode runs twice a training step, the log line below once a run."""
    import importlib

    for name in ("comfy.ldm.wan.vae2_2", "comfy.ldm.wan.vae"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if vae_class is getattr(module, "WanVAE", None):
            if _cache_slot_counter(module) is None:  # a cache API neither 0.3.75 nor 0.33 has
                log.warning("PersonalVideo training: this ComfyUI's %s decoder has a cache API the per-latent-frame "
                            "decode does not know; the reward frames are decoded whole (exact gradient, more "
                            "memory)", name)
                return None
            return module
    return None


# VAEs whose pixel frames depend only on the latent frames up to their own, so a prefix of the latent decodes to
# the same frames as the whole (tests/nodes/test_families_training.py and test_decode_gradient.py compare).
CAUSAL_VAES = (("comfy.ldm.wan.vae", "WanVAE"), ("comfy.ldm.wan.vae2_2", "WanVAE"),
               ("comfy.ldm.cogvideo.vae", "AutoencoderKLCogVideoX"))


@functools.lru_cache(maxsize=None)
def _causal_class(vae_class) -> bool:
    import importlib

    for module_name, name in CAUSAL_VAES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if vae_class is getattr(module, name, None):
            return True
    return False


def decodes_causally(first_stage_model) -> bool:
    """Whether decoding a prefix of the latent gives the whole decode's frames (Wan's and CogVideoX's VAEs). Others
    decode the whole latent: LTX-Video's decoder pads time on both sides, HunyuanVideo 1.5's attends over all
    latent frames in its middle block (a prefix changed its first frames by 0.5% on the tiny one)."""
    return _causal_class(type(first_stage_model))


def _cache_slot_counter(module):
    """The function counting a decoder's cache slots: ``count_conv3d`` (0.3.75) or ``count_cache_layers`` (0.33)."""
    return getattr(module, "count_conv3d", None) or getattr(module, "count_cache_layers", None)


def _complete_cache(before: list, cache: list, frames: int) -> None:
    """After one latent frame's pass: each entry the pass wrote holds ``frames`` frames and owns its memory (see the
    module docstring). A no-op on 0.3.75's layers, which do this themselves."""
    for k, (old, new) in enumerate(zip(before, cache)):
        if not isinstance(new, torch.Tensor) or new is old:
            continue
        if new.shape[2] < frames and isinstance(old, torch.Tensor):
            new = torch.cat([old[:, :, -1:], new], dim=2)
        cache[k] = new if new._base is None else new.clone()


def causal_vae_frames(first_stage_model, z: torch.Tensor, frame_indices: list[int],
                      mode: str) -> torch.Tensor | None:
    """Pixel frames ``frame_indices`` of latent ``z`` [B, C, T, H, W] as [B, 3, M, H', W'] in the VAE's output
    range, decoded latent frame by latent frame with the gradient carried as ``mode`` says
    (training/loop/causal_decode.py); only latent frames up to the last requested one are decoded.
    None when the VAE is not one this walks (decode it whole instead)."""
    module = _wan_vae_module(first_stage_model)
    if module is None:
        return None
    wan22 = module.__name__.endswith("vae2_2")
    decoder = first_stage_model.decoder
    needed = {latent_frame_of(f)[0] for f in frame_indices}
    x = first_stage_model.conv2(z[:, :, : max(needed) + 1])

    def step(i: int, cache: list) -> torch.Tensor:
        extra = {"first_chunk": True} if wan22 and i == 0 else {}
        before = list(cache)
        out = decoder(x[:, :, i:i + 1], feat_cache=cache, feat_idx=[0], **extra)
        _complete_cache(before, cache, getattr(module, "CACHE_T", 2))
        out = torch.cat(out, dim=2) if isinstance(out, list) else out  # 0.33's decoder returns its chunks
        return module.unpatchify(out, patch_size=2) if wan22 else out

    outputs = causal_decode(step, max(needed) + 1, _cache_slot_counter(module)(decoder), needed, mode)
    return select_frames(outputs, frame_indices)
