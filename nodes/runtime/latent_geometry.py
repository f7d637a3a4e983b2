"""The latent a training video has: channels from the model, spatial and temporal compression from the VAE.

Every family trains with its own geometry: Wan 2.1 / HunyuanVideo / Wan 2.2 A14B / CogVideoX (16 channels, 8x
spatial, 4x temporal), Wan 2.2 5B (48 channels, 16x, 4x), HunyuanVideo 1.5 (32 channels, 16x, 4x), LTX-Video
(128 channels, 32x, 8x: videos of 8k+1 frames). ComfyUI's ``VAE`` exposes them as
``latent_channels``, ``spacial_compression_decode()`` and ``temporal_compression_decode()`` (from its
``upscale_ratio``); the model's ``latent_format.latent_channels`` must agree with the VAE's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LatentGeometry:
    channels: int
    spatial: int  # pixels per latent pixel, each side
    temporal: int  # pixel frames per latent frame after the first (causal video VAEs)

    def latent_frames(self, frames: int) -> int:
        return (frames - 1) // self.temporal + 1

    def pixel_frames(self, frames: int) -> int:
        """The frame count a video of ``frames`` requested frames decodes to (temporal·k + 1)."""
        return self.temporal * (self.latent_frames(frames) - 1) + 1

    def latent_shape(self, width: int, height: int, frames: int) -> tuple[int, int, int, int, int]:
        return (1, self.channels, self.latent_frames(frames), height // self.spatial, width // self.spatial)

    def check_video_size(self, width: int, height: int, frames: int) -> None:
        """ValueError naming the rule when the VAE cannot make a video of exactly this size: ``frames`` must be
        temporal·k + 1 (the first frame alone, then groups), width and height multiples of the spatial factor."""
        if frames < 1 or (frames - 1) % self.temporal:
            lower = self.pixel_frames(max(frames, 1))
            raise ValueError(f"frames: got {frames}, expected {self.temporal}k+1 frames: this model's VAE compresses "
                             f"time {self.temporal}x after the first frame (e.g. {1 + self.temporal}, "
                             f"{1 + 2 * self.temporal}, {1 + 4 * self.temporal}); use {lower} or "
                             f"{lower + self.temporal}")
        for name, value in (("width", width), ("height", height)):
            if value < self.spatial or value % self.spatial:
                raise ValueError(f"{name}: got {value}, expected a multiple of {self.spatial} (this model's VAE "
                                 f"compresses space {self.spatial}x); use "
                                 f"{max(self.spatial, value // self.spatial * self.spatial)}")


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
