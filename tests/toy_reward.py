"""A stand-in for the ArcFace identity reward where no face models are needed: cosine similarity of each frame to a
fixed image. Differentiable like the real one and with its result's fields; for tests about the training loop and the
diffusion model's weight path, not about faces."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class ToyIdentity:
    loss: torch.Tensor
    similarity: torch.Tensor
    frames_with_face: int
    frames_without_face: int = 0

    @property
    def mean_similarity(self):
        return float(self.similarity.mean())


def cosine_identity(target: torch.Tensor):
    """The reward of frames [M, ...] against ``target`` (the frame's values, flattened)."""
    def reward(frames: torch.Tensor) -> ToyIdentity:
        sim = F.cosine_similarity(frames.reshape(frames.shape[0], -1), target[None], dim=1)
        return ToyIdentity(1 - sim.mean(), sim.detach(), frames.shape[0])
    return reward
