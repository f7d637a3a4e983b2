"""Evaluation metrics for generated videos, defined as the papers compute them (see shared method notes).

- Face Sim (ConsisID's convention): cosine similarity x 100 between the reference embedding and the
  largest face of 16 uniformly spaced frames; a frame without a face is retried once padded to 1.25x its
  size (faces cut by the border), then skipped; a video with no face at all scores 0.
- Dynamic degree (VBench's definition): optical flow between consecutive frames; per pair the mean of
  the top 5% flow magnitudes; a pair is moving above 6 * min(H, W) / 256 pixels; a video is dynamic when
  at least round(4 * pairs / 16) pairs move (VBench's rule for 16 pairs scaled to the pairs there are).
  VBench uses RAFT, whose weights must be downloaded; here the flow is a coarse-to-fine Horn-Schunck
  estimate in torch, which needs no weights. Its magnitudes are smaller than RAFT's on large motions, so
  scores are comparable within this pack, not to VBench's table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


def uniform_indices(num_frames: int, count: int = 16) -> list[int]:
    """``count`` frame indices spread evenly from the first to the last frame (all frames if fewer)."""
    if num_frames <= count:
        return list(range(num_frames))
    return [round(i * (num_frames - 1) / (count - 1)) for i in range(count)]


def pad_frame(frame: torch.Tensor, factor: float = 1.25) -> torch.Tensor:
    """The frame [H, W, 3] centred on black, ``factor`` times larger (ConsisID's retry for cut faces)."""
    h, w = frame.shape[:2]
    ph, pw = round(h * (factor - 1) / 2), round(w * (factor - 1) / 2)
    return F.pad(frame.permute(2, 0, 1), (pw, pw, ph, ph)).permute(1, 2, 0)


@dataclass
class FaceSim:
    score: float  # mean cosine x 100 over frames with a face; 0 when none has one
    per_frame: list[float | None] = field(default_factory=list)  # None: no face
    frames: list[int] = field(default_factory=list)

    @property
    def no_face_rate(self) -> float:
        return sum(s is None for s in self.per_frame) / max(len(self.per_frame), 1)


@torch.no_grad()
def face_similarity(frames: torch.Tensor, reference: torch.Tensor, identity_model, count: int = 16) -> FaceSim:
    """Face Sim of frames [F, H, W, 3] in [0, 1] against a unit reference embedding [D]."""
    idx = uniform_indices(frames.shape[0], count)
    ref = F.normalize(reference.reshape(-1).float(), dim=0)
    per_frame: list[float | None] = []
    for i in idx:
        frame = frames[i].float()
        faces = identity_model.largest_faces(frame[None])
        if faces[0] is None:
            frame = pad_frame(frame)
            faces = identity_model.largest_faces(frame[None])
        if faces[0] is None:
            per_frame.append(None)
            continue
        emb = identity_model.embed_faces(frame[None], faces)[0]
        per_frame.append(100.0 * float(emb @ ref.to(emb.device)))
    found = [s for s in per_frame if s is not None]
    return FaceSim(sum(found) / len(found) if found else 0.0, per_frame, idx)


def _gray(frame: torch.Tensor) -> torch.Tensor:
    return (frame[..., 0] * 0.299 + frame[..., 1] * 0.587 + frame[..., 2] * 0.114)[None, None] * 255.0


def horn_schunck(a: torch.Tensor, b: torch.Tensor, levels: int = 3, iterations: int = 60,
                 alpha: float = 15.0) -> torch.Tensor:
    """Dense flow [2, H, W] (pixels) from gray image a to b ([1, 1, H, W], 0-255), coarse to fine."""
    pyramid = [(a, b)]
    for _ in range(levels - 1):
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        pyramid.append((a, b))
    flow = torch.zeros(1, 2, *pyramid[-1][0].shape[-2:], dtype=a.dtype, device=a.device)
    avg = torch.tensor([[1, 2, 1], [2, 0, 2], [1, 2, 1]], dtype=a.dtype, device=a.device).view(1, 1, 3, 3) / 12
    for level, (a, b) in enumerate(reversed(pyramid)):
        if level:
            flow = 2 * F.interpolate(flow, size=a.shape[-2:], mode="bilinear", align_corners=False)
        h, w = a.shape[-2:]
        ys, xs = torch.meshgrid(torch.arange(h, dtype=a.dtype, device=a.device),
                                torch.arange(w, dtype=a.dtype, device=a.device), indexing="ij")
        grid = torch.stack(((xs + flow[0, 0]) / max(w - 1, 1) * 2 - 1, (ys + flow[0, 1]) / max(h - 1, 1) * 2 - 1), -1)
        warped = F.grid_sample(b, grid[None], mode="bilinear", padding_mode="border", align_corners=True)
        padded_x = F.pad(warped, (1, 1, 0, 0), mode="replicate")
        padded_y = F.pad(warped, (0, 0, 1, 1), mode="replicate")
        ix = (padded_x[..., 2:] - padded_x[..., :-2]) / 2  # central differences
        iy = (padded_y[..., 2:, :] - padded_y[..., :-2, :]) / 2
        it = warped - a
        du = torch.zeros_like(a)
        dv = torch.zeros_like(a)
        for _ in range(iterations):
            u_avg = F.conv2d(F.pad(du, (1, 1, 1, 1), mode="replicate"), avg)
            v_avg = F.conv2d(F.pad(dv, (1, 1, 1, 1), mode="replicate"), avg)
            common = (ix * u_avg + iy * v_avg + it) / (alpha**2 + ix**2 + iy**2)
            du, dv = u_avg - ix * common, v_avg - iy * common
        flow = flow + torch.cat((du, dv), 1)
    return flow[0]


@dataclass
class DynamicDegree:
    dynamic: bool
    pair_magnitudes: list[float]
    threshold: float
    needed: int


@torch.no_grad()
def dynamic_degree(frames: torch.Tensor, fps: float = 16.0, target_fps: float = 8.0) -> DynamicDegree:
    """VBench's dynamic degree of one video [F, H, W, 3] in [0, 1] (flow: see the module docstring)."""
    step = max(1, round(fps / target_fps))
    clip = frames[::step].float()
    h, w = clip.shape[1:3]
    threshold = 6.0 * min(h, w) / 256.0
    mags = []
    for a, b in zip(clip[:-1], clip[1:]):
        flow = horn_schunck(_gray(a), _gray(b))
        magnitude = flow.norm(dim=0).flatten()
        k = max(1, int(magnitude.numel() * 0.05))
        mags.append(float(magnitude.topk(k).values.mean()))
    needed = max(1, round(4 * len(mags) / 16))
    return DynamicDegree(sum(m > threshold for m in mags) >= needed, mags, threshold, needed)


@torch.no_grad()
def clip_scores(frames: torch.Tensor, prompt: str, semantic_model) -> tuple[float, float]:
    """(CLIP-T, temporal consistency) with an OpenCLIP scorer (the pack's semantic reward model).

    CLIP-T = 100 x mean over frames of cos(image, text); temporal consistency = mean cos between the image
    embeddings of consecutive frames. With an HPS model file the CLIP is HPS-tuned, not the stock CLIP
    papers use: comparable within the pack.
    """
    text = semantic_model.text_features(prompt, frames.device)
    image = semantic_model.image_features(frames)
    clip_t = 100.0 * float((image @ text.T.float()).mean())
    consistency = float((image[1:] * image[:-1]).sum(-1).mean()) if image.shape[0] > 1 else 1.0
    return clip_t, consistency


@torch.no_grad()
def reference_for(identity_model, reference_crops: torch.Tensor) -> torch.Tensor:
    """A reference embedding for another recognizer, from the reference's aligned crops [R, S, S, 3].

    The crops follow the standard ArcFace 5-point template, so any ArcFace-style recognizer can embed them.
    """
    crops = reference_crops.permute(0, 3, 1, 2).float()
    size = identity_model.input_size
    if crops.shape[-1] != size:
        crops = F.interpolate(crops, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return F.normalize(identity_model.embed_crops(crops).mean(0), dim=0)


def evaluate_video(frames: torch.Tensor, reference: torch.Tensor, identity_model, prompt: str = "",
                   fps: float = 16.0, semantic_model=None, second_identity_model=None,
                   reference_crops: torch.Tensor | None = None, face_evaluator=None,
                   evaluator_reference=None, other_references: list[torch.Tensor] | None = None) -> dict:
    """All metrics of one video [F, H, W, 3] in [0, 1], as a JSON-ready dict (callable for batch evaluation).

    The honest check against reward hacking is a recognizer that was not the training reward:
    ``second_identity_model`` (another ArcFace, with the reference's aligned ``reference_crops``) adds
    ``face_sim_2``; ``face_evaluator`` (a recognizer of another lineage with its own detector, e.g.
    evaluation/dlib_face.py, with its ``evaluator_reference`` descriptor) adds ``face_sim_independent``,
    ``face_distance_independent`` and ``same_person_rate_independent``. ``other_references`` (the embeddings of
    the other people in a video of several) adds ``identities``: Face Sim per person with faces matched to people,
    and the identity-bleed rate (evaluation/identities.py).
    """
    face = face_similarity(frames, reference, identity_model)
    motion = dynamic_degree(frames, fps)
    result = {
        "frames": int(frames.shape[0]),
        "face_sim": round(face.score, 3),
        "face_sim_per_frame": [None if s is None else round(s, 3) for s in face.per_frame],
        "no_face_rate": round(face.no_face_rate, 3),
        "dynamic": motion.dynamic,
        "flow_top5pct_per_pair": [round(m, 4) for m in motion.pair_magnitudes],
        "flow_threshold": round(motion.threshold, 4),
        "evaluators": {"face_sim": getattr(identity_model, "name", "identity model"),
                       "dynamic_degree": "Horn-Schunck flow (weight-free), VBench rule"},
    }
    if second_identity_model is not None and reference_crops is not None:
        second = face_similarity(frames, reference_for(second_identity_model, reference_crops), second_identity_model)
        result["face_sim_2"] = round(second.score, 3)
        result["evaluators"]["face_sim_2"] = getattr(second_identity_model, "name", "second identity model")
    if face_evaluator is not None and evaluator_reference is not None:
        independent = face_evaluator.similarity(frames, evaluator_reference)
        result |= {"face_sim_independent": round(independent.score, 3),
                   "face_distance_independent": round(independent.distance, 4),
                   "same_person_rate_independent": round(independent.same_person_rate, 3)}
        result["evaluators"]["face_sim_independent"] = getattr(face_evaluator, "name", "face evaluator")
    if other_references:
        from .identities import identity_face_similarities  # here: identities.py imports this module

        result["identities"] = identity_face_similarities(frames, [reference, *other_references],
                                                          identity_model).as_dict()
    if semantic_model is not None and prompt:
        clip_t, consistency = clip_scores(frames, prompt, semantic_model)
        result |= {"clip_t": round(clip_t, 3), "temporal_consistency": round(consistency, 4)}
        result["evaluators"]["clip"] = getattr(semantic_model, "name", "semantic model")
    return result
