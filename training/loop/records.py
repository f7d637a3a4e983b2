"""What a training run records: one ``StepRecord`` per step, the run's ``TrainResult``, and the step's draw."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class StepDraw:
    """The random choices of one step, a function of (seed, step) only, so a resumed run repeats them."""

    prompt: str
    noise_seed: int
    frames: list[int]  # indices of the M reward frames (pixel frames of the video)


@dataclass
class StepRecord:
    step: int
    prompt: str
    loss: float
    icr_loss: float
    scr_loss: float
    similarity: float  # mean face similarity of the tuned frames (NaN: no face)
    source_similarity: float  # the same for the source (frozen model) frames of the same draw
    no_face_rate: float
    skipped: str = ""  # why the step did not update the adapter ("" = it did)
    # The same similarities by an independent recognizer (not the reward's), when one is connected (else NaN):
    # the guard against reward hacking, a face that fools the reward's recognizer without looking more alike.
    independent_similarity: float = float("nan")
    independent_source_similarity: float = float("nan")


@dataclass
class TrainResult:
    history: list[StepRecord] = field(default_factory=list)
    skipped_non_finite: int = 0
    resumed_from: int = 0


@dataclass
class Preview:
    """The first tuned reward frame of the last step and the face box the identity reward used (None: no face)."""

    frame: torch.Tensor  # [H, W, 3] in [0, 1]
    box: list[float] | None
