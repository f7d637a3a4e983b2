"""ComfyUI's causal video VAEs as a per-latent-frame ``step`` for training/loop/causal_decode.py.

Wan 2.1's VAE (``comfy.ldm.wan.vae.WanVAE``, also what Wan 2.2 A14B uses) and Wan 2.2's (``vae2_2.WanVAE``,
TI2V-5B) decode as ``x = conv2(z)`` then ``decoder(x[:, :, i:i+1], feat_cache, feat_idx)`` per latent frame
(2.2: ``first_chunk`` on frame 0, then ``unpatchify``). Other VAEs (HunyuanVideo's, LTXV's, ...) are not walked
this way: ``causal_vae_frames`` returns None for them and the caller decodes them whole (plain autograd). The
walk relies on 0.3.75's decoder cache API (``count_conv3d``, ``feat_cache``/``feat_idx``); ComfyUI 0.33 changed it
(``cache_list``/``cache_idx``, deferred caches), so there the Wan VAEs decode whole too, said in the log.
"""

from __future__ import annotations

import functools
import logging

import torch

from ..training.loop.causal_decode import causal_decode, latent_frame_of, select_frames

log = logging.getLogger(__name__)


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
            if not hasattr(module, "count_conv3d"):  # newer ComfyUI: another cache API (checked on 0.33.0)
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


def supports_walk(first_stage_model) -> bool:
    """Whether ``causal_vae_frames`` can decode this VAE latent frame by latent frame."""
    return _wan_vae_module(first_stage_model) is not None


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
        out = decoder(x[:, :, i:i + 1], feat_cache=cache, feat_idx=[0], **extra)
        return module.unpatchify(out, patch_size=2) if wan22 else out

    outputs = causal_decode(step, max(needed) + 1, module.count_conv3d(decoder), needed, mode)
    return select_frames(outputs, frame_indices)
