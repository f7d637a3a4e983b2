"""Line-chart images (float [1, H, W, 3] in [0, 1], ComfyUI's IMAGE layout): the training curve and the evaluation's
per-frame numbers. Plain PIL: the trainer node and the scale-out trainer (scaleout/run.py) draw the same chart."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

TRAINING_SERIES = (  # attribute, label, colour
    ("loss", "loss", (230, 80, 60)),
    ("similarity", "face sim (tuned)", (60, 160, 230)),
    ("source_similarity", "face sim (source)", (150, 150, 150)),
    ("no_face_rate", "no-face rate", (240, 190, 40)),
)


def line_chart(series: list[tuple[str, list[float | None], tuple[int, int, int]]], x_label: str,
               width: int = 768, height: int = 384, lo: float = -0.5, hi: float = 1.5) -> torch.Tensor:
    """A [1, H, W, 3] IMAGE of each (label, values, colour) series; None/NaN values are gaps."""
    img = Image.new("RGB", (width, height), (24, 24, 28))
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = 50, 30, width - 10, height - 30
    draw.rectangle([left, top, right, bottom], outline=(90, 90, 90))
    for v in (0.0, 0.5, 1.0):
        y = bottom - (v - lo) / (hi - lo) * (bottom - top)
        draw.line([left, y, right, y], fill=(50, 50, 56))
        draw.text((8, y - 6), f"{v:.1f}", fill=(170, 170, 170))
    for i, (label, values, colour) in enumerate(series):
        n = max(len(values), 2)
        points = []
        for k, v in enumerate(values):
            if v is None or math.isnan(v):
                continue
            v = min(max(v, lo), hi)
            points.append((left + k / (n - 1) * (right - left), bottom - (v - lo) / (hi - lo) * (bottom - top)))
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points if len(points) < 40 else points[:1]:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        draw.text((left + 5 + i * 175, 8), label, fill=colour)
    draw.text((left, bottom + 8), x_label, fill=(170, 170, 170))
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]


def training_chart(history) -> torch.Tensor:
    """Loss, face similarity (tuned and source videos) and no-face rate per training step."""
    series = [(label, [getattr(r, attr) for r in history], colour) for attr, label, colour in TRAINING_SERIES]
    return line_chart(series, f"steps 0..{len(history) - 1}")
