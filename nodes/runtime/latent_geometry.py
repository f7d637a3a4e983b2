"""The latent geometry of a training video from ComfyUI's objects: channels from the model, spatial and temporal
compression from the VAE (training/latent_geometry.py holds the geometry and its frame arithmetic).

ComfyUI's ``VAE`` exposes them as ``latent_channels``, ``spacial_compression_decode()`` and
``temporal_compression_decode()`` (from its ``upscale_ratio``); the model's ``latent_format.latent_channels`` must
agree with the VAE's.
"""

from __future__ import annotations

from ...training.latent_geometry import LatentGeometry


def latent_geometry(patcher, vae) -> LatentGeometry:
    """The geometry of ``patcher``'s latents decoded by ``vae``; ValueError when the two do not belong together."""
    channels = int(patcher.model.latent_format.latent_channels)
    vae_channels = getattr(vae, "latent_channels", channels)
    if vae_channels != channels:
        raise ValueError(f"vae: got a VAE with {vae_channels}-channel latents, expected one for the model's "
                         f"{channels}-channel latents (e.g. Wan 2.2 5B: wan2.2_vae, Wan 2.1 / 2.2 A14B: "
                         "wan_2.1_vae); connect the model's own VAE")
    spatial = int(vae.spacial_compression_decode())
    temporal = vae.temporal_compression_decode()
    if temporal is None:
        raise ValueError("vae: got an image VAE (no temporal compression), expected the video model's VAE; "
                         "connect the model's own video VAE")
    return LatentGeometry(channels, spatial, max(1, int(temporal)))
