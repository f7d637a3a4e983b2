"""A real two-person clip, and a stand-in decoder that returns it: support for the routing tests and benchmark.

The tiny models are random, and no tiny video VAE here keeps faces (the tiny random Wan VAE decodes any latent to
noise; the proving ground's trained one is not built in tests), so the automatic regions' decode step cannot show a
face on its own. ``PhotoDecoder`` stands in for a VAE that does: its ``decode`` returns real photos of two people,
whatever the latent, after (optionally) running the real VAE's decode so its cost is paid. Faces come from
face_recognition's test photos (dev/face_assets.py).
"""

from __future__ import annotations

import torch


def two_people(height: int, width: int, frames: int = 9, left: str = "obama.jpg", right: str = "biden.jpg"):
    """A real two-person clip [F, H, W, 3]: two photos side by side, drifting apart by up to 2 pixels."""
    import torch.nn.functional as F

    from .face_assets import load_photo

    side = width // 2 - 8
    photos = [F.interpolate(load_photo(n).permute(2, 0, 1)[None], size=(height, side), mode="bilinear")[0]
              for n in (left, right)]
    clip = []
    for f in range(frames):
        shift = 3 * f // frames  # 0, 1, 2 pixels over the clip
        canvas = torch.zeros(3, height, width)
        canvas[:, :, 4 - shift: 4 - shift + side] = photos[0]
        canvas[:, :, width // 2 + 4 + shift: width // 2 + 4 + shift + side] = photos[1]
        clip.append(canvas.permute(1, 2, 0))
    return torch.stack(clip).clamp(0, 1)


class PhotoDecoder:
    """A VAE stand-in whose ``decode`` returns ``frames`` (a real video of real faces) whatever the latent, and records
    the latents it was given. Geometry and memory management are the real ``vae``'s; with ``run_vae`` the real decode
    runs too (its output is dropped), so a benchmark pays what a VAE that keeps faces would cost."""

    def __init__(self, vae, frames: torch.Tensor, run_vae: bool = False):
        self.vae, self.frames, self.run_vae, self.latents = vae, frames, run_vae, []
        self.patcher = vae.patcher

    def decode(self, latent):
        self.latents.append(latent.clone())
        if self.run_vae:
            self.vae.decode(latent)
        return self.frames[None]

    def temporal_compression_decode(self):
        return self.vae.temporal_compression_decode()
