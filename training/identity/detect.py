"""SCRFD face detection (insightface's detector with 5 landmarks) in onnxruntime.

Detection never needs gradients (it only chooses where to crop), so it runs in onnxruntime: on the GPU
provider (onnxruntime-gpu's CUDA, onnxruntime-rocm's ROCm) on ComfyUI's GPU when both are there, on the CPU
otherwise. The pack requires neither onnxruntime wheel (installing one over the other breaks it): the user
has, or installs, the one that fits the machine; ``import_onnxruntime`` says which when neither is there.
Post-processing follows insightface's ``SCRFD``: anchor-centre decoding of distances, score threshold, NMS at
IoU 0.4.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..logs import pack_logger

log = pack_logger(__name__)

# outputs -> (strides, anchors per location); 9 / 15 outputs carry 5 landmarks, 6 / 10 do not.
_LAYOUTS = {9: ((8, 16, 32), 2), 15: ((8, 16, 32, 64, 128), 1)}


ONNXRUNTIME_MISSING = (
    "face detection needs onnxruntime, which is not installed in ComfyUI's Python. Install exactly one of: "
    "'pip install onnxruntime-gpu' (NVIDIA GPU; detection then runs on CUDA) or 'pip install onnxruntime' "
    "(CPU, Apple, AMD). Not both: the two wheels write the same 'onnxruntime' package and the later one "
    "replaces the other (a CPU wheel installed over onnxruntime-gpu removes its CUDA provider)."
)
GPU_PROVIDERS = ("CUDAExecutionProvider", "ROCMExecutionProvider")


def import_onnxruntime():
    """onnxruntime, or ImportError saying which wheel to install (the pack does not require either: see
    requirements.txt)."""
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(ONNXRUNTIME_MISSING) from e
    return onnxruntime


def onnx_providers(device: torch.device | str | None = None, available: list[str] | None = None) -> list:
    """Execution providers for a session that should run on ``device`` (ComfyUI's torch device).

    A GPU device: the GPU provider onnxruntime has (onnxruntime-gpu: CUDA; onnxruntime-rocm: ROCm) on the same
    device index, then CPU. A CPU device (ComfyUI ``--cpu``): CPU only, even where onnxruntime-gpu is
    installed. No device: the GPU provider first when there is one. ``available`` defaults to what the
    installed onnxruntime offers.
    """
    if available is None:
        available = import_onnxruntime().get_available_providers()
    device = torch.device(device) if device is not None else None
    cpu = ["CPUExecutionProvider"] if "CPUExecutionProvider" in available else []
    if device is not None and device.type == "cpu":
        return cpu or list(available)
    gpu = [p for p in GPU_PROVIDERS if p in available]
    if not gpu:
        return cpu or list(available)
    if device is not None and device.index is not None:
        return [(gpu[0], {"device_id": device.index}), *cpu]
    return [gpu[0], *cpu]


def detector_problem(model) -> str | None:
    """Why an ONNX model is not an SCRFD detector with landmarks (None when it is one)."""
    outputs = len(model.graph.output)
    if outputs in (6, 10):
        return f"it is a detector without landmarks ({outputs} outputs); alignment needs the 5-point variant (bnkps)"
    if outputs not in _LAYOUTS:
        return f"it has {outputs} outputs (SCRFD with landmarks has 9 or 15)"
    return None


@dataclass
class Face:
    """One detected face in frame pixel coordinates."""

    box: np.ndarray  # [4] x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # [5, 2] eyes, nose, mouth corners

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))


def _nms(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> list[int]:
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[1:][ovr <= thresh]
    return keep


class SCRFDDetector:
    """An SCRFD ONNX detector: ``detect(image)`` -> faces sorted by score."""

    def __init__(self, path: str | os.PathLike, model=None, det_size: int = 640, nms_threshold: float = 0.4,
                 providers: list | None = None, device: torch.device | str | None = None):
        import onnx

        ort = import_onnxruntime()

        self.path = os.fspath(path)
        self.name = os.path.basename(self.path)
        if model is None:
            model = onnx.load(self.path, load_external_data=False)
        problem = detector_problem(model)
        if problem:
            raise ValueError(f"detector {self.name}: not an SCRFD face detector with landmarks: {problem}")
        self.strides, self.anchors = _LAYOUTS[len(model.graph.output)]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        wanted = providers or onnx_providers(device)
        self.session = ort.InferenceSession(self.path, options, providers=wanted)
        self.providers = self.session.get_providers()  # what the session really uses
        first = wanted[0][0] if isinstance(wanted[0], tuple) else wanted[0]
        if first in GPU_PROVIDERS and first not in self.providers:
            log.warning("detector %s: onnxruntime could not start %s (its CUDA/ROCm libraries do not match this "
                        "machine's) and runs on %s; install the onnxruntime-gpu build for your CUDA version to "
                        "detect on the GPU", self.name, first, self.providers[0])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_names = [o.name for o in self.session.get_outputs()]
        fixed = [d for d in inp.shape[2:4] if isinstance(d, int) and d > 0]
        self.input_hw = (fixed[0], fixed[1]) if len(fixed) == 2 else (det_size, det_size)
        self.nms_threshold = nms_threshold
        self._centres: dict[tuple[int, int, int], np.ndarray] = {}

    def _blob(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """Resize (keeping aspect) into the input size, pad bottom/right with black, normalise."""
        h, w = image.shape[:2]
        in_h, in_w = self.input_hw
        if h / w > in_h / in_w:
            new_h, new_w = in_h, max(1, int(in_h / (h / w)))
        else:
            new_w, new_h = in_w, max(1, int(in_w * (h / w)))
        scale = new_h / h
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
        blob = torch.zeros(1, 3, in_h, in_w)
        blob[:, :, :new_h, :new_w] = x.round().clamp(0, 255)  # cv2 works on uint8 images
        return ((blob - 127.5) / 128.0).numpy(), scale

    def _centres_for(self, h: int, w: int, stride: int) -> np.ndarray:
        key = (h, w, stride)
        if key not in self._centres:
            c = np.stack(np.mgrid[:h, :w][::-1], axis=-1).astype(np.float32).reshape(-1, 2) * stride
            if self.anchors > 1:
                c = np.repeat(c, self.anchors, axis=0)
            self._centres[key] = c
        return self._centres[key]

    def detect(self, image: np.ndarray, threshold: float = 0.5) -> list[Face]:
        """Faces in one RGB image [H, W, 3] with values 0..255 (uint8 or float), best score first."""
        blob, scale = self._blob(image)
        outs = self.session.run(self.output_names, {self.input_name: blob})
        fmc = len(self.strides)
        boxes, scores, kpss = [], [], []
        for i, stride in enumerate(self.strides):
            s, b, k = (outs[i + j * fmc] for j in range(3))
            if s.ndim == 3:  # batched export: [1, N, C]
                s, b, k = s[0], b[0], k[0]
            centres = self._centres_for(blob.shape[2] // stride, blob.shape[3] // stride, stride)
            pos = np.where(s.reshape(-1) >= threshold)[0]
            if not pos.size:
                continue
            c, d, kd = centres[pos], b[pos] * stride, k[pos] * stride
            boxes.append(np.stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1], c[:, 0] + d[:, 2], c[:, 1] + d[:, 3]], -1))
            kpss.append(np.repeat(c, 5, axis=0).reshape(-1, 5, 2) + kd.reshape(-1, 5, 2))
            scores.append(s.reshape(-1)[pos])
        if not boxes:
            return []
        boxes_a, scores_a, kps_a = np.concatenate(boxes) / scale, np.concatenate(scores), np.concatenate(kpss) / scale
        keep = _nms(boxes_a, scores_a, self.nms_threshold)
        return [Face(boxes_a[i].astype(np.float64), float(scores_a[i]), kps_a[i].astype(np.float64)) for i in keep]
