"""The latent a training video has, and its frame arithmetic: one rule for both trainers.

Channels come from the model; spatial and temporal compression from the VAE. Causal video VAEs decode latent frame
0 to one pixel frame and every later latent frame to ``temporal`` pixel frames, so a video has temporal·k + 1
frames (Wan 2.1 / 2.2 A14B / HunyuanVideo / CogVideoX: 16 channels, 8x, 4x; Wan 2.2 5B: 48, 16x, 4x; HunyuanVideo
1.5: 32, 16x, 4x; LTX-Video: 128, 32x, 8x; AnimateDiff's image VAE: 4, 8x, 1x, one latent frame per frame).
nodes/runtime/latent_geometry.py reads it from ComfyUI's model and VAE, scaleout/backends from the diffusers
pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass


def latent_frame_of(frame: int, temporal: int = 4) -> tuple[int, int]:
    """(latent frame, position among that latent frame's decoded frames) of pixel frame ``frame``."""
    if frame == 0:
        return 0, 0
    return (frame - 1) // temporal + 1, (frame - 1) % temporal


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

    def last_latent_frame(self, frame_indices) -> int:
        """The last latent frame that pixel frames ``frame_indices`` decode from (a causal VAE needs no later one)."""
        return max(latent_frame_of(f, self.temporal)[0] for f in frame_indices)

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
