"""The identity reward (ICR): ArcFace cosine similarity of frame faces to the reference identity.

Detection (SCRFD, onnxruntime, no gradient) finds the largest face and its 5 landmarks in every
frame; the crop is a differentiable similarity warp of the full-resolution frame onto the ArcFace
template and the recognizer is the torch module built from the pack's ONNX file, so the loss
gradient flows back into the frame pixels (and from there into the VAE decoder and the denoiser).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .arcface import ArcFaceTorch, recognizer_problem
from ..devices import DeviceHolder
from .align import arcface_matrix, warp_crops
from .detect import Face, SCRFDDetector, detector_problem
from ..logs import pack_logger

log = pack_logger(__name__)

# Preferred file names when a pack holds several candidates (insightface's own packs).
_DETECTOR_NAMES = ("det_10g", "scrfd_10g_bnkps", "det_2.5g", "det_500m", "scrfd_500m_bnkps")
_RECOGNIZER_NAMES = ("glintr100", "w600k_r50", "w600k_mbf")


def _rank(path: Path, names: tuple[str, ...]) -> tuple[int, int]:
    stem = path.stem
    return (names.index(stem) if stem in names else len(names), -path.stat().st_size)


@dataclass(frozen=True)
class PackModels:
    """The SCRFD detector and the ArcFace recognizer of an insightface pack folder: paths and parsed ONNX."""

    detector_path: Path
    detector: object  # onnx.ModelProto
    recognizer_path: Path
    recognizer: object  # onnx.ModelProto


def find_pack_models(pack_dir: str | os.PathLike) -> PackModels:
    """The SCRFD detector and the ArcFace recognizer in a pack folder (the preferred one of each).

    Raises FileNotFoundError naming the folder when it is missing or lacks either model.
    """
    import onnx

    pack = Path(pack_dir)
    if not pack.is_dir():
        raise FileNotFoundError(
            f"insightface pack: folder {pack} does not exist. Put the pack's .onnx files in "
            "models/insightface/models/<pack>/ (e.g. antelopev2, buffalo_l)"
        )
    files = sorted(pack.glob("*.onnx"))
    detectors, recognizers, seen = [], [], []
    for f in files:
        model = onnx.load(os.fspath(f), load_external_data=False)
        if detector_problem(model) is None:
            detectors.append((f, model))
            seen.append(f"{f.name} (detector)")
        elif recognizer_problem(model) is None:
            recognizers.append((f, model))
            seen.append(f"{f.name} (recognizer)")
        else:
            seen.append(f"{f.name} (other)")
    found = ", ".join(seen) or "no .onnx files"
    if not detectors:
        raise FileNotFoundError(
            f"insightface pack {pack.name}: no SCRFD face detector with 5 landmarks in {pack} (found: {found}). "
            "Expected e.g. det_10g.onnx or scrfd_10g_bnkps.onnx; copy the complete pack"
        )
    if not recognizers:
        raise FileNotFoundError(
            f"insightface pack {pack.name}: no ArcFace recognizer in {pack} (found: {found}). "
            "Expected e.g. w600k_r50.onnx or glintr100.onnx; copy the complete pack"
        )
    detectors.sort(key=lambda fm: _rank(fm[0], _DETECTOR_NAMES))
    recognizers.sort(key=lambda fm: _rank(fm[0], _RECOGNIZER_NAMES))
    return PackModels(*detectors[0], *recognizers[0])


@dataclass
class IdentityRewardResult:
    """Per-frame identity similarity and the ICR loss.

    ``similarity`` is NaN for frames without a face; those frames are excluded from the loss and
    counted in ``frames_without_face``. When no frame has a face the loss is a zero that keeps the
    graph (zero gradient) and ``frames_with_face`` is 0: the caller decides what that step means.
    """

    similarity: torch.Tensor
    face_mask: torch.Tensor
    loss: torch.Tensor
    frames_with_face: int
    frames_without_face: int
    faces: list[Face | None] = field(repr=False, default_factory=list)

    @property
    def mean_similarity(self) -> float:
        """Mean similarity over frames with a face (NaN when there is none)."""
        return float(self.similarity.detach()[self.face_mask].mean()) if self.frames_with_face else float("nan")


def recognizer_fingerprint(recognizer: torch.nn.Module) -> str:
    """Identifies a recognizer by its weights, not by its file or folder name: every tensor's shape, and
    the values of the first and last three (embeddings are only comparable within one recognizer)."""
    tensors = list(recognizer.state_dict().items())
    h = hashlib.sha1()
    for name, t in tensors:
        h.update(f"{name}:{tuple(t.shape)};".encode())
    for _, t in tensors[:3] + tensors[-3:]:
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class IdentityRewardModel:
    """SCRFD detector (onnxruntime) + differentiable ArcFace (torch) with the alignment between them.

    The recognizer is kept in float32 on every device: it is small (13-250 MB) and the reward is a
    cosine whose differences between frames are a few hundredths, so half precision buys little.
    """

    def __init__(self, detector: SCRFDDetector, recognizer: ArcFaceTorch, name: str = "",
                 det_threshold: float = 0.5, load_device: torch.device | str = "cpu",
                 offload_device: torch.device | str = "cpu"):
        self.detector = detector
        self.name = name or recognizer.source
        self.det_threshold = det_threshold
        self.recognizer = DeviceHolder(recognizer, load_device, offload_device, torch.float32)
        self.input_size = recognizer.input_size
        self.embedding_dim = recognizer.embedding_dim
        self.fingerprint = recognizer_fingerprint(recognizer)
        self.warned_no_face = False  # "no face in any frame" is warned once per model; the summary counts them all

    def __repr__(self) -> str:
        return (f"IdentityRewardModel({self.name}: detector {self.detector.name}, "
                f"recognizer {self.recognizer.module.source}, {self.embedding_dim}-d)")

    # -- detection (no gradient) -------------------------------------------------------------
    def detect(self, image: torch.Tensor | np.ndarray, threshold: float | None = None) -> list[Face]:
        """All faces in one RGB image [H, W, 3] with values in [0, 1], best score first."""
        if isinstance(image, torch.Tensor):
            image = image.detach().float().cpu().numpy()
        image = np.clip(np.asarray(image, dtype=np.float32) * 255.0, 0, 255)
        return self.detector.detect(image, self.det_threshold if threshold is None else threshold)

    def largest_faces(self, frames: torch.Tensor) -> list[Face | None]:
        """The largest face of each frame [F, H, W, 3] (None where no face is found)."""
        out = []
        for frame in frames:
            faces = self.detect(frame)
            out.append(max(faces, key=lambda f: f.area) if faces else None)
        return out

    # -- differentiable part -------------------------------------------------------------------
    def align(self, images: torch.Tensor, faces: list[Face], extra: list[np.ndarray] | None = None) -> torch.Tensor:
        """Aligned crops [N, 3, S, S] from images [N, 3, H, W] and one face each (differentiable).

        ``extra`` optionally composes a crop-space matrix after the alignment (crop jitter).
        """
        mats = [arcface_matrix(f.landmarks, self.input_size) for f in faces]
        if extra is not None:
            mats = [e @ m for e, m in zip(extra, mats)]
        return warp_crops(images, np.stack(mats), self.input_size)

    def embed_faces(self, frames: torch.Tensor, faces: list[Face]) -> torch.Tensor:
        """Unit-norm embeddings [N, D] of one face in each frame [N, H, W, 3] in [0, 1]: align, then embed
        (differentiable w.r.t. the frames)."""
        return self.embed_crops(self.align(frames.permute(0, 3, 1, 2).float(), faces))

    def embed_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings [N, D] of aligned RGB crops [N, 3, S, S] in [0, 1]."""
        with self.recognizer.on_device(crops.device) as net:
            return F.normalize(net(crops).float(), dim=-1)

    def reward(self, frames: torch.Tensor, reference: torch.Tensor,
               faces: list[Face | None] | None = None) -> IdentityRewardResult:
        """Cosine similarity of each frame [F, H, W, 3] in [0, 1] to ``reference`` [D], and the ICR loss.

        loss = 1 - mean similarity over the frames where a face was found. ``faces`` may be given to
        reuse detections (e.g. the same frames at several optimisation steps).
        """
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames: got shape {list(frames.shape)}, expected [F, H, W, 3] RGB in [0, 1]; pass the "
                             "frames as a ComfyUI IMAGE batch")
        reference = reference.reshape(-1)
        if reference.numel() != self.embedding_dim:
            raise ValueError(
                f"reference: a {reference.numel()}-d embedding, but recognizer {self.name} gives "
                f"{self.embedding_dim}-d ones; build the reference with the same identity reward model"
            )
        faces = self.largest_faces(frames) if faces is None else faces
        mask = torch.tensor([f is not None for f in faces], dtype=torch.bool, device=frames.device)
        idx = [i for i, f in enumerate(faces) if f is not None]
        sim = torch.full((frames.shape[0],), float("nan"), device=frames.device)
        if not idx:
            if not self.warned_no_face:
                log.warning("identity reward: no face in any of %d frames; the identity loss is 0 for such batches "
                            "(said once; the training summary counts the frames without a face)", len(faces))
                self.warned_no_face = True
            else:
                log.debug("identity reward: no face in any of %d frames", len(faces))
            loss = (frames * 0).sum()
        else:
            emb = self.embed_faces(frames[idx], [faces[i] for i in idx])
            ref = F.normalize(reference.to(emb.device, emb.dtype), dim=0)
            s = emb @ ref
            sim = sim.index_put((torch.tensor(idx, device=frames.device),), s)
            loss = 1.0 - s.mean()
            if len(idx) < len(faces):
                log.info("identity reward: %d of %d frames have no face and are excluded",
                         len(faces) - len(idx), len(faces))
        return IdentityRewardResult(sim, mask, loss, len(idx), len(faces) - len(idx), faces)


def load_identity_reward_model(pack_dir: str | os.PathLike, det_size: int = 640, det_threshold: float = 0.5,
                               load_device: torch.device | str = "cpu",
                               offload_device: torch.device | str = "cpu") -> IdentityRewardModel:
    """Load an insightface pack folder: SCRFD detector in onnxruntime, ArcFace recognizer in torch."""
    pack = find_pack_models(pack_dir)
    detector = SCRFDDetector(pack.detector_path, pack.detector, det_size=det_size, device=load_device)
    recognizer = ArcFaceTorch(pack.recognizer, pack.recognizer_path.name)
    log.info("identity reward: pack %s, detector %s (%s), recognizer %s (%d-d)", Path(pack_dir).name,
             pack.detector_path.name, detector.providers[0], pack.recognizer_path.name, recognizer.embedding_dim)
    return IdentityRewardModel(detector, recognizer, Path(pack_dir).name, det_threshold, load_device, offload_device)
