"""diffusers' Wan VAE (AutoencoderKLWan, 2.1 and 2.2) as a per-latent-frame ``step`` for
training/loop/causal_decode.py: the reward frames decoded with gradient in bounded memory, as the node side does
for ComfyUI's Wan VAEs (nodes/runtime/vae_decode.py). The step repeats ``AutoencoderKLWan._decode``'s loop:
post_quant_conv, then the decoder per latent frame with its feature cache (``first_chunk`` on frame 0), unpatchify (2.2), and the
final clamp to [-1, 1].
"""

from __future__ import annotations

import torch

from ...training.latent_geometry import latent_frame_of
from ...training.loop.causal_decode import causal_decode, select_frames


def wan_vae_frames(vae, z: torch.Tensor, frame_indices: list[int], temporal: int, mode: str) -> torch.Tensor:
    """Pixel frames ``frame_indices`` of VAE latents ``z`` [B, C, T, h, w] as [B, 3, M, H, W] in [-1, 1]."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, unpatchify

    needed = {latent_frame_of(f, temporal)[0] for f in frame_indices}
    x = vae.post_quant_conv(z[:, :, : max(needed) + 1].to(vae.dtype))
    patch = vae.config.patch_size
    slots = sum(isinstance(m, WanCausalConv3d) for m in vae.decoder.modules())  # as diffusers counts them

    def step(i: int, cache: list) -> torch.Tensor:
        extra = {"first_chunk": True} if i == 0 else {}
        out = vae.decoder(x[:, :, i:i + 1], feat_cache=cache, feat_idx=[0], **extra)
        return unpatchify(out, patch_size=patch) if patch is not None else out

    outputs = causal_decode(step, max(needed) + 1, slots, needed, mode)
    return select_frames(outputs, frame_indices, temporal).clamp(-1.0, 1.0)
