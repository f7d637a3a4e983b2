"""The reference identity: detected, aligned reference faces and their (augmented) mean embedding.

One photo is enough: each reference face is embedded several times under seeded crop jitter (small
shift/scale/rotation of the alignment) and colour jitter (brightness, contrast, saturation), and the
reference embedding is the normalised mean over references of the normalised mean over those views.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .align import jitter_matrix
from .detect import Face
from .reward import IdentityRewardModel
from ..logs import pack_logger

log = pack_logger(__name__)

# Same person scores about 0.6-0.75 with ArcFace, different people -0.15-0.25.
DIFFERENT_PERSON_BELOW = 0.35
# SCRFD misses faces that fill the whole image: retry with the photo padded by these fractions.
_PAD_RETRIES = (0.25, 0.6)
# Upscale tiny images so the face reaches a size the detector was trained on.
_MIN_SIDE = 256


@dataclass
class ReferenceIdentity:
    """What the identity reward compares against."""

    embedding: torch.Tensor  # [D] unit norm, float32, CPU
    per_reference: torch.Tensor  # [R, D] unit norm
    pairwise_similarity: torch.Tensor  # [R, R]
    crops: torch.Tensor  # [R, S, S, 3] aligned faces in [0, 1]
    faces: list[Face]
    image_sizes: list[tuple[int, int]]  # (H, W) of each reference
    face_counts: list[int]
    model_name: str
    notes: list[str] = field(default_factory=list)
    recognizer_fingerprint: str = ""  # IdentityRewardModel.fingerprint of the recognizer that embedded it
    # [R, C, C, 3]: each reference face with its surroundings (square, 2.5x the face box, 384 px), unaligned, so a
    # recognizer with its own detector and alignment (the independent evaluator) can embed the references too.
    context_crops: torch.Tensor | None = None

    def check_recognizer(self, model: IdentityRewardModel) -> None:
        """Refuse a recognizer other than the one this reference was embedded with (both give 512-d unit
        vectors, so a mix-up would silently compare unrelated spaces)."""
        if self.recognizer_fingerprint and self.recognizer_fingerprint != model.fingerprint:
            raise ValueError(
                f"reference: built with the recognizer of '{self.model_name}', but the identity reward model "
                f"here is '{model.name}' ({model.recognizer.module.source}), a different recognizer whose "
                "embeddings cannot be compared with it; connect the same Load Identity Reward Model to Load "
                "Reference Faces and to this node")

    @property
    def min_pairwise(self) -> float:
        r = self.pairwise_similarity.shape[0]
        if r < 2:
            return float("nan")
        off = self.pairwise_similarity[~torch.eye(r, dtype=torch.bool)]
        return float(off.min())

    def report(self) -> str:
        """Human-readable summary: each reference, pairwise similarity and warnings."""
        lines = [f"reference identity from {len(self.faces)} image(s), recognizer {self.model_name}"]
        for i, (f, (h, w), n) in enumerate(zip(self.faces, self.image_sizes, self.face_counts)):
            extra = f" ({n} faces: the largest is used)" if n > 1 else ""
            lines.append(f"  image {i + 1} ({w}x{h}): face score {f.score:.2f}, "
                         f"{f.box[2] - f.box[0]:.0f}x{f.box[3] - f.box[1]:.0f} px{extra}")
        r = len(self.faces)
        if r > 1:
            lines.append("  pairwise similarity of the references:")
            for i in range(r):
                row = " ".join(f"{float(v):+.2f}" for v in self.pairwise_similarity[i])
                lines.append(f"    {i + 1}: {row}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def to_rgb(image: torch.Tensor, index: int = 0) -> torch.Tensor:
    """One image as float RGB [H, W, 3] in [0, 1]: grayscale is repeated, alpha is dropped."""
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(f"reference images: image {index + 1} has shape {list(image.shape)}, expected [H, W, C]; "
                         "pass each photo as one image (a batch's images one by one)")
    if image.dtype == torch.uint8:
        image = image.float() / 255.0
    image = image.float()
    c = image.shape[-1]
    if c in (1, 2):  # gray, gray + alpha
        image = image[..., :1].expand(-1, -1, 3)
    elif c == 4:  # RGBA: ComfyUI's LoadImage already splits alpha off; drop it here as well
        image = image[..., :3]
    elif c != 3:
        raise ValueError(f"reference images: image {index + 1} has {c} channels, expected 1, 3 or 4; convert it to "
                         "RGB")
    return image.clamp(0, 1).contiguous()


@dataclass
class _Search:
    """Where faces were found: in ``image``, the input upscaled by ``scale`` and then padded by ``pad`` (x, y)
    pixels; the faces' coordinates are in that image."""

    faces: list[Face]
    image: torch.Tensor
    scale: float
    pad: tuple[float, float]


def _find_face(model: IdentityRewardModel, image: torch.Tensor) -> _Search:
    """Faces in ``image``, upscaling tiny images and padding close-ups if the first look finds none."""
    h, w = image.shape[:2]
    s, pad = 1.0, (0.0, 0.0)
    if min(h, w) < _MIN_SIDE:
        s = _MIN_SIDE / min(h, w)
        image = F.interpolate(image.permute(2, 0, 1)[None], size=(round(h * s), round(w * s)),
                              mode="bicubic", align_corners=False)[0].permute(1, 2, 0).clamp(0, 1)
    faces = model.detect(image)
    for frac in _PAD_RETRIES:
        if faces:
            break
        ph, pw = int(image.shape[0] * frac), int(image.shape[1] * frac)
        padded = F.pad(image.permute(2, 0, 1), (pw, pw, ph, ph)).permute(1, 2, 0)
        faces = model.detect(padded)
        if faces:
            image, pad = padded, (pw, ph)
    return _Search(faces, image, s, pad)


CONTEXT_SIZE = 384
CONTEXT_MARGIN = 2.5  # side of the context crop / longest side of the face box


def _context_crop(image: torch.Tensor, face: Face, size: int = CONTEXT_SIZE) -> torch.Tensor:
    """A square crop [size, size, 3] of ``image`` [H, W, 3] centred on the face, black outside the image."""
    x0, y0, x1, y1 = (float(v) for v in face.box)
    side = CONTEXT_MARGIN * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    chw = image.permute(2, 0, 1)[None].float()
    h, w = image.shape[:2]
    # affine_grid in normalised coordinates (align_corners=False): the crop square mapped into the image
    theta = torch.tensor([[side / w, 0.0, (2 * cx / w) - 1], [0.0, side / h, (2 * cy / h) - 1]], dtype=torch.float32)
    grid = F.affine_grid(theta[None], [1, 3, size, size], align_corners=False)
    return F.grid_sample(chw, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0].permute(1, 2, 0)


def _colour_jitter(crop: torch.Tensor, rng: torch.Generator, strength: float) -> torch.Tensor:
    """Random brightness, contrast and saturation factors in [1 - strength, 1 + strength]; crop [3, S, S]."""
    b, c, s = (1.0 + strength * (torch.rand(3, generator=rng) * 2 - 1)).tolist()
    x = crop * b
    x = (x - x.mean()) * c + x.mean()
    gray = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
    return ((x - gray) * s + gray).clamp(0, 1)


@torch.no_grad()
def build_reference(model: IdentityRewardModel, images: list[torch.Tensor], augmentations: int = 8,
                    crop_jitter: float = 0.05, colour_jitter: float = 0.1, seed: int = 0) -> ReferenceIdentity:
    """Detect, align and embed reference photos (each [H, W, C]) into a ReferenceIdentity.

    Each reference contributes its plain crop plus ``augmentations`` jittered views (seeded).
    Raises ValueError for an empty list or an image without a face (naming its index and size).
    """
    if not images:
        raise ValueError("reference images: got no image, expected at least one photo showing the face")
    faces, crops, contexts, embeddings, sizes, counts, notes = [], [], [], [], [], [], []
    rng = torch.Generator().manual_seed(int(seed))
    for i, raw in enumerate(images):
        image = to_rgb(raw, i)
        h, w = image.shape[:2]
        search = _find_face(model, image)
        found, scale, (px, py) = search.faces, search.scale, search.pad
        if not found:
            raise ValueError(
                f"reference images: no face found in image {i + 1} of {len(images)} ({w}x{h}); use a photo "
                "where the face is clearly visible, frontal-ish and at least about 64 px wide"
            )
        face = max(found, key=lambda f: f.area)
        if len(found) > 1:
            notes.append(f"image {i + 1} shows {len(found)} faces; the largest one is used")
            log.info("reference image %d: %d faces, using the largest", i + 1, len(found))
        chw = search.image.permute(2, 0, 1)[None]
        plain = model.align(chw, [face])
        views = [plain]
        for _ in range(augmentations):
            crop = model.align(chw, [face], extra=[jitter_matrix(rng, crop_jitter, model.input_size)])
            views.append(_colour_jitter(crop[0], rng, colour_jitter)[None])
        emb = model.embed_crops(torch.cat(views)).mean(0)
        offset = np.array([px, py, px, py], dtype=np.float64)
        faces.append(Face((face.box - offset) / scale, face.score, (face.landmarks - offset[:2]) / scale))
        crops.append(plain[0].permute(1, 2, 0))
        contexts.append(_context_crop(search.image, face))
        embeddings.append(F.normalize(emb, dim=0))
        sizes.append((h, w))
        counts.append(len(found))
    per_ref = torch.stack(embeddings)
    pairwise = per_ref @ per_ref.T
    ref = ReferenceIdentity(F.normalize(per_ref.mean(0), dim=0), per_ref, pairwise, torch.stack(crops), faces,
                            sizes, counts, model.name, notes, model.fingerprint, torch.stack(contexts))
    if len(images) > 1 and ref.min_pairwise < DIFFERENT_PERSON_BELOW:
        i, j = np.unravel_index(int(torch.argmin(pairwise + 2 * torch.eye(len(images)))), pairwise.shape)
        msg = (f"references {i + 1} and {j + 1} have similarity {float(pairwise[i, j]):.2f} (same person is "
               f"usually above {DIFFERENT_PERSON_BELOW}): they may show different people")
        notes.append(msg)
        log.warning("reference identity: %s", msg)
    return ref
