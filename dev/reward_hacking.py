"""Reward hacking made on purpose, for the tests and the benchmark of the independent face evaluator.

Adam steps on the pixels of a photo of one person toward another person's ArcFace embedding, through the
pack's identity reward (the gradient the trainer follows, here with nothing between the loss and the pixels);
then each evaluator re-detects the face on the 8-bit result and scores it. Gains are compared as the
fraction of the gap closed, from the photo before to other photos of the target person, because each
evaluator has its own scale.
"""

from __future__ import annotations

import torch


def pixel_hack(model, image: torch.Tensor, target: torch.Tensor, steps: int = 6, lr: float = 0.01,
               redetect: bool = False) -> torch.Tensor:
    """``image`` [H, W, 3] in [0, 1] after ``steps`` Adam steps that raise its ArcFace similarity to ``target``,
    rounded to 8 bits (as a saved frame). ``redetect``: detect the face on every step as the trainer does on
    each decoded frame; otherwise the face found on the original is kept (a perturbation tuned to one alignment).
    """
    faces = None if redetect else model.largest_faces(image[None])
    delta = torch.zeros_like(image, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        model.reward((image + delta).clamp(0, 1)[None], target, faces).loss.backward()
        opt.step()
    return ((image + delta.detach()).clamp(0, 1) * 255).round() / 255


def gap_closed(before: float, after: float, same_person: float) -> float:
    """How much of the way from ``before`` to the same-person level ``after`` went (similarity or distance)."""
    return (after - before) / (same_person - before)
