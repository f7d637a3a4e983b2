"""Region masks on the latent's token grid: from given masks, or from face boxes in decoded frames.

A video transformer sees the latent [C, T, H, W] as tokens of ``patch`` = (pt, ph, pw) latent cells (Wan and
HunyuanVideo: 1 x 2 x 2), in (frame, row, column) order, the latent padded at the end of each axis to a multiple
of the patch. A region is a weight per token in [0, 1].

- Given masks arrive at the latent's (H, W) already (the caller resizes them as core's regional conditioning does),
  one per latent frame after ``latent_frame_masks``; ``pool_to_tokens`` averages each token's cells (edge-padded,
  so an all-ones mask stays all ones on every token).
- Face boxes (pixels of the decoded frames) become the tokens their dilated box touches: a token box always
  contains the pixel box (``token_box`` rounds outwards). Where two identities' regions overlap, each token goes to
  the identity whose face centre is nearer (in units of that face's size), so no token gets two adapters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def latent_frame_masks(masks: torch.Tensor, latent_frames: int, temporal: int, source: str = "mask") -> torch.Tensor:
    """Masks [N, H, W] as one mask per latent frame [T, H, W].

    N = 1: the same region in every frame; N = T: one per latent frame; N = temporal * (T - 1) + 1 (one per video
    frame): a latent frame takes the maximum over the video frames it decodes to (frame 0 alone, then groups of
    ``temporal``), so the region covers the person wherever they are during that latent frame."""
    if masks.ndim != 3:
        raise ValueError(f"{source}: got shape {list(masks.shape)}, expected a MASK batch [frames, height, width]")
    n, frames = masks.shape[0], temporal * (latent_frames - 1) + 1
    if n == 1:
        return masks.expand(latent_frames, -1, -1)
    if n == latent_frames:
        return masks
    if n == frames:
        groups = [masks[:1]] + [masks[temporal * (t - 1) + 1: temporal * t + 1] for t in range(1, latent_frames)]
        return torch.stack([g.amax(0) for g in groups])
    raise ValueError(f"{source}: got a batch of {n} masks, expected 1 (the same region in every frame), "
                     f"{latent_frames} (one per latent frame) or {frames} (one per frame of this {frames}-frame "
                     "video); make the mask batch one of those lengths")


def pool_to_tokens(mask: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """A mask per latent cell [T, H, W] as a weight per token [T', H', W'] (mean over each token's cells)."""
    pt, ph, pw = patch
    t, h, w = mask.shape
    pad = (0, -w % pw, 0, -h % ph, 0, -t % pt)
    m = mask.float()[None, None]
    if any(pad):
        m = F.pad(m, pad, mode="replicate")
    return F.avg_pool3d(m, kernel_size=patch, stride=patch)[0, 0]


def token_grid(latent_shape: tuple[int, ...], patch: tuple[int, int, int]) -> tuple[int, int, int]:
    """(T', H', W') tokens of a latent [..., T, H, W] cut into ``patch`` cells (padded at the end)."""
    return tuple(math.ceil(n / p) for n, p in zip(latent_shape[-3:], patch))


def token_box(box, frame_hw: tuple[int, int], grid_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1), ends exclusive: the tokens a pixel box (x1, y1, x2, y2) of a frame of
    ``frame_hw`` touches, on a ``grid_hw`` token grid; rounded outwards so the tokens contain the box."""
    (fh, fw), (gh, gw) = frame_hw, grid_hw
    x1, y1, x2, y2 = (float(v) for v in box)
    r0, c0 = math.floor(max(y1, 0.0) * gh / fh), math.floor(max(x1, 0.0) * gw / fw)
    r1, c1 = math.ceil(min(y2, fh) * gh / fh), math.ceil(min(x2, fw) * gw / fw)
    return min(r0, gh - 1), min(c0, gw - 1), max(r1, r0 + 1), max(c1, c0 + 1)


def dilate(box, scale: float, frame_hw: tuple[int, int]) -> tuple[float, float, float, float]:
    """The box scaled by ``scale`` about its centre (1.8: the face box grown to cover the head), clipped."""
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * scale / 2, (y2 - y1) * scale / 2
    return max(cx - hw, 0.0), max(cy - hh, 0.0), min(cx + hw, frame_hw[1]), min(cy + hh, frame_hw[0])


@dataclass(frozen=True)
class FaceRegion:
    """One identity's region in one token frame: the union of its dilated boxes (pixels) and its face's centre
    and size (pixels), which settle overlaps with another identity's region."""

    box: tuple[float, float, float, float]
    centre: tuple[float, float]
    size: float


def region_token_masks(regions: list[list[FaceRegion | None]], grid: tuple[int, int, int],
                       frame_hw: tuple[int, int]) -> torch.Tensor:
    """Masks [identities, T', H', W'] (0/1) from ``regions[i][t]`` (None: identity i has no region in token frame t).
    A token inside several identities' regions goes to the one whose face centre is nearest relative to its size."""
    n, (gt, gh, gw) = len(regions), grid
    masks = torch.zeros(n, gt, gh, gw)
    distance = torch.full((n, gt, gh, gw), math.inf)
    rows = (torch.arange(gh, dtype=torch.float32) + 0.5) * frame_hw[0] / gh  # token centres in pixels
    cols = (torch.arange(gw, dtype=torch.float32) + 0.5) * frame_hw[1] / gw
    for i, per_frame in enumerate(regions):
        if len(per_frame) != gt:
            raise ValueError(f"regions: identity {i + 1} has {len(per_frame)} token frames, expected {gt}")
        for t, region in enumerate(per_frame):
            if region is None:
                continue
            r0, c0, r1, c1 = token_box(region.box, frame_hw, (gh, gw))
            masks[i, t, r0:r1, c0:c1] = 1.0
            d = torch.hypot(rows[:, None] - region.centre[1], cols[None, :] - region.centre[0]) / max(region.size, 1e-6)
            distance[i, t] = torch.where(masks[i, t] > 0, d, torch.full_like(d, math.inf))
    if n > 1:
        nearest = F.one_hot(distance.argmin(0), n).permute(3, 0, 1, 2).float()
        masks = masks * nearest
    return masks
