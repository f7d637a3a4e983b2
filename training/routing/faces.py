"""Faces found in the frames of a video, followed over frames and given to identities.

- ``track_faces``: frame by frame, each face joins the track whose last box overlaps it most (the exact best
  one-to-one matching on IoU); a face overlapping none starts a track. Tracks seen in too few frames (a false
  detection in a blurry prediction) are not faces; the caller reports them.
- ``assign_identities``: the user's order (identity 1 = the leftmost face, ...) or the closest reference (the exact
  best matching on ArcFace similarity between each track's mean embedding and each identity's reference).
- ``identity_regions``: each identity's region per token frame, the union of its track's face boxes over the video
  frames of that token frame (a frame where the detector missed the face takes the box interpolated between the
  nearest detections), dilated by ``scale``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..identity.detect import Face
from .matching import best_assignment
from .regions import FaceRegion, dilate

LEFT_TO_RIGHT, CLOSEST_REFERENCE = "left to right", "closest reference"
ORDERS = (LEFT_TO_RIGHT, CLOSEST_REFERENCE)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class FaceTrack:
    faces: dict[int, Face] = field(default_factory=dict)  # frame index -> the face found there

    def last_box(self) -> np.ndarray:
        return self.faces[max(self.faces)].box

    def box_at(self, frame: int) -> np.ndarray:
        """The face box in ``frame``: detected, else interpolated between the nearest detections (held at ends)."""
        if frame in self.faces:
            return self.faces[frame].box
        seen = sorted(self.faces)
        before, after = [f for f in seen if f < frame], [f for f in seen if f > frame]
        if not before or not after:
            return self.faces[before[-1] if before else after[0]].box
        a, b = before[-1], after[0]
        w = (frame - a) / (b - a)
        return (1 - w) * self.faces[a].box + w * self.faces[b].box

    @property
    def centre_x(self) -> float:
        return float(np.mean([(f.box[0] + f.box[2]) / 2 for f in self.faces.values()]))

    @property
    def area(self) -> float:
        return float(np.mean([f.area for f in self.faces.values()]))

    def describe(self) -> str:
        x1, y1, x2, y2 = np.mean([f.box for f in self.faces.values()], axis=0)
        return f"face at x {x1:.0f}-{x2:.0f}, y {y1:.0f}-{y2:.0f} px (seen in {len(self.faces)} frames)"


def track_faces(per_frame: list[list[Face]], min_iou: float = 0.1, min_presence: float = 0.25
                ) -> tuple[list[FaceTrack], list[FaceTrack]]:
    """(tracks seen in at least ``min_presence`` of the frames, sorted left to right; the shorter ones)."""
    tracks: list[FaceTrack] = []
    for frame, faces in enumerate(per_frame):
        matched = set()
        if tracks and faces:
            overlap = np.array([[iou(t.last_box(), f.box) for f in faces] for t in tracks])
            for t, f in best_assignment(overlap, minimum=min_iou):
                tracks[t].faces[frame] = faces[f]
                matched.add(f)
        tracks += [FaceTrack({frame: f}) for i, f in enumerate(faces) if i not in matched]
    needed = max(1, int(np.ceil(min_presence * len(per_frame))))
    kept = sorted((t for t in tracks if len(t.faces) >= needed), key=lambda t: t.centre_x)
    return kept, [t for t in tracks if len(t.faces) < needed]


@dataclass
class Assignment:
    track_of: list[int | None]  # per identity: the index of its track, None when no face was left for it
    extra: list[int]  # tracks given to no identity

    def mismatch(self, names: list[str], tracks: list[FaceTrack]) -> str | None:
        """What does not fit (None when every identity has exactly one face and no face is left over)."""
        missing = [names[i] for i, t in enumerate(self.track_of) if t is None]
        parts = []
        if missing:
            parts.append(f"no face left for {', '.join(missing)} (its adapter acts nowhere)")
        if self.extra:
            parts.append("faces given to no identity (they keep the base model): "
                         + "; ".join(tracks[t].describe() for t in self.extra))
        if not parts:
            return None
        return f"found {len(tracks)} face(s) for {len(names)} identities: " + "; ".join(parts)


def assign_identities(tracks: list[FaceTrack], identities: int, order: str,
                      similarity: np.ndarray | None = None) -> Assignment:
    """Give tracks to identities by ``order``; ``similarity`` [tracks, identities] for CLOSEST_REFERENCE."""
    if order == LEFT_TO_RIGHT:
        largest = sorted(range(len(tracks)), key=lambda i: -tracks[i].area)[:identities]
        chosen = sorted(largest, key=lambda i: tracks[i].centre_x)
        track_of = chosen + [None] * (identities - len(chosen))
    elif order == CLOSEST_REFERENCE:
        if similarity is None or similarity.shape != (len(tracks), identities):
            raise ValueError(f"similarity: expected a [{len(tracks)}, {identities}] matrix of each face's similarity "
                             "to each identity's reference")
        track_of = [None] * identities
        for t, i in best_assignment(similarity):
            track_of[i] = t
    else:
        raise ValueError(f"order: got {order!r}, expected one of {ORDERS}")
    used = {t for t in track_of if t is not None}
    return Assignment(track_of, [t for t in range(len(tracks)) if t not in used])


def token_frame_groups(latent_frames: int, temporal: int, patch_t: int, video_frames: int) -> list[list[int]]:
    """The video frames each token frame covers (latent frame 0 decodes to frame 0, latent frame t >= 1 to frames
    temporal*(t-1)+1 .. temporal*t; a token frame spans ``patch_t`` latent frames)."""
    per_latent = [[0]] + [list(range(temporal * (t - 1) + 1, temporal * t + 1)) for t in range(1, latent_frames)]
    per_latent = [[f for f in group if f < video_frames] or [video_frames - 1] for group in per_latent]
    return [sum(per_latent[t: t + patch_t], []) for t in range(0, latent_frames, patch_t)]


def identity_regions(tracks: list[FaceTrack], assignment: Assignment, groups: list[list[int]],
                     frame_hw: tuple[int, int], scale: float) -> list[list[FaceRegion | None]]:
    """Per identity, per token frame: its region (None for every frame when it has no face)."""
    out = []
    for t in assignment.track_of:
        if t is None:
            out.append([None] * len(groups))
            continue
        per_frame = []
        for group in groups:
            boxes = np.array([tracks[t].box_at(f) for f in group])
            grown = np.array([dilate(b, scale, frame_hw) for b in boxes])
            union = (float(grown[:, 0].min()), float(grown[:, 1].min()), float(grown[:, 2].max()),
                     float(grown[:, 3].max()))
            centre = (float((boxes[:, 0] + boxes[:, 2]).mean() / 2), float((boxes[:, 1] + boxes[:, 3]).mean() / 2))
            size = float(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).mean())
            per_frame.append(FaceRegion(union, centre, size))
        out.append(per_frame)
    return out
