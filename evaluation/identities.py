"""Videos of several people: Face Sim per identity, with faces matched to identities, and the identity-bleed rate.

In each of 16 uniformly spaced frames (ConsisID's sampling) every detected face is embedded and compared with every
identity's reference; faces and identities are matched one to one by the exact best assignment on similarity (the
Hungarian method: ``scipy.optimize.linear_sum_assignment``, training/routing/matching.py). An identity's Face Sim is
the mean cosine x 100 of its matched faces over the frames where it got one (0 when it never did; its missing rate
says how often). A matched face *bleeds* when it is more similar to another identity's reference than to its own
(one person's face drifting towards the other's): the bleed rate is the share of matched faces that do. The matching
ignores where the faces are, so a video with the two people swapped scores as well as the right one; the gain
routing has to show is in Face Sim and bleed, not in position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..training.routing.matching import best_assignment
from .metrics import uniform_indices


@dataclass
class IdentityFaceSims:
    names: list[str]
    face_sim: list[float]  # per identity: mean cosine x 100 over frames with a face matched to it; 0 when none
    per_frame: list[list[float | None]]  # [identity][sampled frame]; None: no face matched to it there
    frames: list[int]
    matched: int  # faces matched to an identity, over all sampled frames
    bled: int  # of those, faces more similar to another identity's reference than to their own

    @property
    def bleed_rate(self) -> float:
        return self.bled / self.matched if self.matched else 0.0

    def missing_rate(self, identity: int) -> float:
        row = self.per_frame[identity]
        return sum(s is None for s in row) / max(len(row), 1)

    def as_dict(self) -> dict:
        return {"names": self.names, "face_sim": [round(s, 3) for s in self.face_sim],
                "missing_rate": [round(self.missing_rate(i), 3) for i in range(len(self.names))],
                "bleed_rate": round(self.bleed_rate, 3), "matched_faces": self.matched, "bled_faces": self.bled,
                "face_sim_per_frame": [[None if s is None else round(s, 3) for s in row] for row in self.per_frame]}


@torch.no_grad()
def identity_face_similarities(frames: torch.Tensor, references: list[torch.Tensor], identity_model,
                               names: list[str] | None = None, count: int = 16) -> IdentityFaceSims:
    """Per-identity Face Sim and bleed of frames [F, H, W, 3] in [0, 1] against unit reference embeddings [D]."""
    if len(references) < 2:
        raise ValueError(f"references: got {len(references)}, expected one per person and at least 2 (for one "
                         "person use Face Sim)")
    names = names or [f"identity {i + 1}" for i in range(len(references))]
    refs = torch.stack([F.normalize(r.reshape(-1).float(), dim=0) for r in references])
    idx = uniform_indices(frames.shape[0], count)
    per_frame: list[list[float | None]] = [[] for _ in references]
    matched = bled = 0
    for i in idx:
        frame = frames[i].float()
        faces = identity_model.detect(frame)
        row: list[float | None] = [None] * len(references)
        if faces:
            emb = identity_model.embed_faces(frame[None].expand(len(faces), -1, -1, -1), faces)
            sim = emb @ refs.to(emb.device).T  # [faces, identities]
            for face, person in best_assignment(sim):
                row[person] = 100.0 * float(sim[face, person])
                matched += 1
                others = torch.cat([sim[face, :person], sim[face, person + 1:]])
                bled += bool(others.max() > sim[face, person])
        for person, value in enumerate(row):
            per_frame[person].append(value)
    scores = [sum(s for s in row if s is not None) / max(sum(s is not None for s in row), 1) for row in per_frame]
    return IdentityFaceSims(names, scores, per_frame, idx, matched, bled)
