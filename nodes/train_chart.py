"""The training-curve IMAGE: loss, face similarity (adapter and base) and no-face rate per step."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

SERIES = (  # attribute, label, colour
    ("loss", "loss", (230, 80, 60)),
    ("similarity", "face sim (adapter)", (60, 160, 230)),
    ("source_similarity", "face sim (base)", (150, 150, 150)),
    ("no_face_rate", "no-face rate", (240, 190, 40)),
)


def training_chart(history, width: int = 768, height: int = 384) -> torch.Tensor:
    """A [1, H, W, 3] IMAGE plotting each series over the steps (values clipped to [-0.5, 1.5])."""
    img = Image.new("RGB", (width, height), (24, 24, 28))
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = 50, 30, width - 10, height - 30
    lo, hi = -0.5, 1.5
    draw.rectangle([left, top, right, bottom], outline=(90, 90, 90))
    for v in (0.0, 0.5, 1.0):
        y = bottom - (v - lo) / (hi - lo) * (bottom - top)
        draw.line([left, y, right, y], fill=(50, 50, 56))
        draw.text((8, y - 6), f"{v:.1f}", fill=(170, 170, 170))
    n = max(len(history), 2)
    for i, (attr, label, colour) in enumerate(SERIES):
        points = []
        for k, rec in enumerate(history):
            v = getattr(rec, attr)
            if v is None or math.isnan(v):
                continue
            v = min(max(v, lo), hi)
            points.append((left + k / (n - 1) * (right - left), bottom - (v - lo) / (hi - lo) * (bottom - top)))
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        elif points:
            draw.ellipse([points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2], fill=colour)
        draw.text((left + 5 + i * 175, 8), label, fill=colour)
    draw.text((left, bottom + 8), f"steps 0..{len(history) - 1}", fill=(170, 170, 170))
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]
