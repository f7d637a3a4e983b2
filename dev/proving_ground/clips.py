"""Short face clips with known motion, cut from still photos: the proving ground's training videos.

Each clip is a window moving over a square canvas centred on one face: the window slides (the face moves left or
right in the frame) or scales (the camera zooms in or out). The motion is named by the prompt, a few words read
by the pack's deterministic text stand-in (dev/standin_nodes), so "moves left" and "moves right" are different
conditionings and the model must follow them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dev.proving_ground.faces import FaceCrop

SUBJECT = "a person"
MOTIONS = ("moves left", "moves right", "zooms in", "zooms out")
CANVAS_SCALE = 4  # canvas pixels per frame pixel: the frames are a mild downscale of it (no aliasing)


def prompt_for(motion: str, subject: str = SUBJECT) -> str:
    if motion not in MOTIONS:
        raise ValueError(f"motion: got {motion!r}, expected one of {MOTIONS}")
    return f"{subject} {motion}"


def motion_of(prompt: str) -> str | None:
    """The motion a prompt names (the last one it contains), or None."""
    found = [m for m in MOTIONS if m in prompt]
    return found[-1] if found else None


_CANVASES: dict[tuple[int, int], torch.Tensor] = {}
BASE_FILL = 0.42  # the face's share of the frame side at zoom 1 (SCRFD finds 64-px faces at 0.4-0.55, not 0.7)


def cached_canvas(face: FaceCrop, res: int) -> torch.Tensor:
    """``canvas(face, res, BASE_FILL)``, computed once per face (mirroring and resizing a photo is slow)."""
    key = (id(face.image), hash(face.box), res)
    if key not in _CANVASES:
        _CANVASES[key] = canvas(face, res, BASE_FILL)
    return _CANVASES[key]


def canvas(face: FaceCrop, res: int, fill: float) -> torch.Tensor:
    """[3, 4res, 4res] float in [0, 1]: a square twice the frame's field of view around the face, the face taking
    ``fill`` of the frame's side at zoom 1. Photo borders are mirrored."""
    x1, y1, x2, y2 = face.box
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, face.size / fill
    pad = math.ceil(half) + 2
    padded = np.pad(face.image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    box = (cx - half + pad, cy - half + pad, cx + half + pad, cy + half + pad)
    side = CANVAS_SCALE * res
    img = Image.fromarray(padded).resize((side, side), Image.LANCZOS, box=box)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def render(canv: torch.Tensor, res: int, zooms: torch.Tensor, shifts: torch.Tensor,
           offset: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """Frames [F, res, res, 3] from a canvas: frame f shows the window of half-size 0.5/zooms[f] centred at
    (shifts[f] + offset[0], offset[1]) in the canvas' [-1, 1] coordinates (rendered at 2x and averaged down)."""
    n = zooms.shape[0]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 0.5 / zooms
    theta[:, 0, 2] = shifts + offset[0]
    theta[:, 1, 2] = offset[1]
    grid = F.affine_grid(theta, (n, 3, 2 * res, 2 * res), align_corners=False)
    frames = F.grid_sample(canv[None].expand(n, -1, -1, -1), grid, mode="bilinear", padding_mode="reflection",
                           align_corners=False)
    return F.avg_pool2d(frames, 2).permute(0, 2, 3, 1).clamp(0, 1)


def trajectory(motion: str, frames: int, amount: float, strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(zooms, shifts) per frame. ``amount`` in [0, 1] scales the motion from its smallest to its largest;
    ``strength`` scales both (1: pans of 28-48 % of the frame width, zooms of 1.35-1.6x over the clip)."""
    t = torch.linspace(0, 1, frames)
    if motion in ("moves left", "moves right"):
        a = (0.14 + 0.1 * amount) * strength  # window travel; the face travels 2a of the frame width
        shifts = (2 * t - 1) * a * (1 if motion == "moves left" else -1)
        return torch.ones(frames), shifts
    if motion in ("zooms in", "zooms out"):
        log_ratio = math.log(1.35 + 0.25 * amount) * strength  # log of last / first scale
        logs = (t - 0.5) * log_ratio * (1 if motion == "zooms in" else -1)
        return torch.exp(logs), torch.zeros(frames)
    raise ValueError(f"motion: got {motion!r}, expected one of {MOTIONS}")


def random_clip(faces: list[FaceCrop], gen: torch.Generator, res: int, frames: int,
                motion: str | None = None, strength: float = 1.0, translate: float = 0.0,
                augment: bool = True) -> tuple[torch.Tensor, str]:
    """One clip [F, res, res, 3] of a random face with a random (or the given) motion, and its motion.
    ``translate``: the face's place in the frame moves by up to this share of the frame side in x and y (random,
    the same for the whole clip; 0: centred, and no extra random draw, so other clips stay as they were).
    ``augment`` False: no flip, brightness, contrast or zoom jitter and a middling motion amount, so each face
    gives exactly one clip per motion (the same random draws are made either way)."""
    u = torch.rand(6, generator=gen).tolist()
    face = faces[int(torch.randint(len(faces), (1,), generator=gen))]
    motion = motion or MOTIONS[int(torch.randint(len(MOTIONS), (1,), generator=gen))]
    canv = cached_canvas(face, res)
    if not augment:
        u = [0.5, 1.0, 0.5, 0.5, 0.5, u[5]]  # zoom 1.12, no flip, contrast and brightness unchanged, amount 0.5
    if u[1] < 0.5:
        canv = canv.flip(-1)
    canv = ((canv - 0.5) * (0.85 + 0.3 * u[2]) + 0.5 + 0.1 * (u[3] - 0.5)).clamp(0, 1)  # contrast, brightness
    zooms, shifts = trajectory(motion, frames, u[4], strength)
    offset = tuple(((torch.rand(2, generator=gen) * 2 - 1) * translate).tolist()) if translate else (0.0, 0.0)
    return render(canv, res, zooms * (1 + 0.24 * u[0]), shifts, offset), motion  # face fills 0.42-0.52 at zoom 1
