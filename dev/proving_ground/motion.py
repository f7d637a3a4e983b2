"""Did a clip move as its prompt said? Measured on the face SCRFD finds in each frame.

Pans move the face's centre; zooms change its size. From the first to the last frame with a face:
``dx`` = centre shift in frame widths (negative: left), ``log_scale`` = log of the box-size ratio (positive:
zoom in). A clip follows "moves left/right" when dx has the prompted sign and |dx| >= 0.05, and
"zooms in/out" when log_scale has the prompted sign and |log_scale| >= 0.05 (the recipe's training clips,
motion strength 0.35; measured by this code on 24 of them: |dx| 0.10-0.20, |log_scale| 0.05-0.19, 23 follow).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

MIN_SHIFT, MIN_LOG_SCALE = 0.05, 0.05


@dataclass
class ClipMotion:
    face_rate: float  # share of frames with a detected face
    dx: float  # NaN when fewer than two frames have a face
    log_scale: float

    def follows(self, motion: str) -> bool:
        if math.isnan(self.dx):
            return False
        if motion == "moves left":
            return self.dx <= -MIN_SHIFT
        if motion == "moves right":
            return self.dx >= MIN_SHIFT
        if motion == "zooms in":
            return self.log_scale >= MIN_LOG_SCALE
        if motion == "zooms out":
            return self.log_scale <= -MIN_LOG_SCALE
        raise ValueError(f"motion: got {motion!r}, expected a motion of dev/proving_ground/clips.py")


def face_boxes(frames: torch.Tensor, det, threshold: float = 0.5) -> list[np.ndarray | None]:
    """The highest-scoring face box per frame (frames [F, H, W, 3] in [0, 1]); None where SCRFD finds none."""
    out = []
    for frame in frames:
        faces = det.detect((frame.float().clamp(0, 1) * 255).cpu().numpy(), threshold)
        out.append(faces[0].box if faces else None)
    return out


def measure(frames: torch.Tensor, det) -> ClipMotion:
    boxes = face_boxes(frames, det)
    found = [b for b in boxes if b is not None]
    rate = len(found) / max(len(boxes), 1)
    if len(found) < 2:
        return ClipMotion(rate, float("nan"), float("nan"))
    first, last = found[0], found[-1]
    width = frames.shape[2]
    dx = ((last[0] + last[2]) - (first[0] + first[2])) / 2 / width
    size = lambda b: max(b[2] - b[0], b[3] - b[1], 1e-3)
    return ClipMotion(rate, float(dx), float(math.log(size(last) / size(first))))
