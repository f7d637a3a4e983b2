"""Differentiable ArcFace alignment: a 5-point similarity transform and a grid_sample warp.

The transform is estimated from the detector's landmarks exactly as insightface's ``norm_crop`` does
(Umeyama's least-squares similarity to the 112x112 ArcFace template); the landmarks are constants
(detection only chooses *where* to crop). The warp itself is ``F.affine_grid`` + ``F.grid_sample`` on
the full-resolution frame, so gradients reach every pixel the crop samples and no other pixel.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# insightface.utils.face_align.arcface_dst: eyes, nose tip, mouth corners in a 112x112 crop.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) mapping src to dst.

    Same algorithm as ``skimage.transform.SimilarityTransform.estimate``. Returns a 3x3 matrix that
    maps homogeneous source points to destination points.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n, dim = src.shape
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_d, dst_d = src - src_mean, dst - dst_mean
    a = dst_d.T @ src_d / n
    d = np.ones(dim)
    if np.linalg.det(a) < 0:
        d[-1] = -1
    u, s, vt = np.linalg.svd(a)
    rank = np.linalg.matrix_rank(a)
    if rank == 0:
        raise ValueError(f"landmarks: got {n} points that all coincide at {tuple(np.round(src_mean, 2).tolist())}, "
                         "expected distinct points (eyes, nose, mouth corners): a degenerate detection cannot be "
                         "aligned; use the detector's landmarks of a visible face")
    t = np.eye(dim + 1)
    if rank == dim - 1:
        if np.linalg.det(u) * np.linalg.det(vt) > 0:
            t[:dim, :dim] = u @ vt
        else:
            s_ = d[-1]
            d[-1] = -1
            t[:dim, :dim] = u @ np.diag(d) @ vt
            d[-1] = s_
    else:
        t[:dim, :dim] = u @ np.diag(d) @ vt
    scale = (s @ d) / src_d.var(0).sum()
    t[:dim, dim] = dst_mean - scale * (t[:dim, :dim] @ src_mean)
    t[:dim, :dim] *= scale
    return t


def arcface_matrix(landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """3x3 matrix mapping frame pixels to crop pixels (insightface ``estimate_norm``, arcface mode)."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.size != 10:
        raise ValueError(f"landmarks: got shape {list(landmarks.shape)}, expected 5 (x, y) points [5, 2] (eyes, nose, "
                         "mouth corners); use a face detector with 5-point landmarks (SCRFD's *_kps models)")
    landmarks = landmarks.reshape(5, 2)
    if size % 112 == 0:
        dst = ARCFACE_TEMPLATE * (size / 112.0)
    elif size % 128 == 0:
        dst = ARCFACE_TEMPLATE * (size / 128.0)
        dst[:, 0] += 8.0 * size / 128.0
    else:
        raise ValueError(f"crop size: got {size}, expected a multiple of 112 or 128 (the ArcFace template's crop); "
                         "use the recognizer's input size (112 for ArcFace)")
    return umeyama_similarity(landmarks, dst)


def _pixel_to_normalised(size_w: int, size_h: int) -> np.ndarray:
    """Pixel coordinates (pixel i at coordinate i, cv2's convention) -> grid_sample's [-1, 1]."""
    return np.array([[2.0 / size_w, 0.0, 1.0 / size_w - 1.0], [0.0, 2.0 / size_h, 1.0 / size_h - 1.0], [0, 0, 1]])


def warp_theta(matrices: np.ndarray, in_hw: tuple[int, int], out_size: int) -> np.ndarray:
    """affine_grid thetas [N, 2, 3] (align_corners=False) for frame->crop pixel matrices [N, 3, 3]."""
    h, w = in_hw
    to_norm_in = _pixel_to_normalised(w, h)
    from_norm_out = np.linalg.inv(_pixel_to_normalised(out_size, out_size))
    thetas = [(to_norm_in @ np.linalg.inv(m) @ from_norm_out)[:2] for m in np.asarray(matrices, dtype=np.float64)]
    return np.stack(thetas) if thetas else np.zeros((0, 2, 3))


def warp_crops(images: torch.Tensor, matrices: np.ndarray, out_size: int = 112) -> torch.Tensor:
    """Warp images [N, C, H, W] with frame->crop pixel matrices [N, 3, 3] into crops [N, C, S, S].

    Bilinear sampling with zeros outside the frame, like ``cv2.warpAffine(..., borderValue=0)``.
    Differentiable with respect to ``images``.
    """
    n, c, h, w = images.shape
    theta = torch.from_numpy(warp_theta(matrices, (h, w), out_size)).to(images.device, images.dtype)
    grid = F.affine_grid(theta, [n, c, out_size, out_size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def jitter_matrix(rng: torch.Generator, strength: float, size: int = 112) -> np.ndarray:
    """A random small similarity around the crop centre (shift, scale, rotation) for crop jitter.

    ``strength`` 0.05 means shifts up to 5% of the crop, scale within +-5% and rotation within +-3 deg.
    """
    u = (torch.rand(4, generator=rng) * 2 - 1).double().numpy()
    scale = 1.0 + strength * u[0]
    angle = np.deg2rad(60.0 * strength * u[1])
    tx, ty = strength * size * u[2], strength * size * u[3]
    c = (size - 1) / 2.0
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[cos, -sin, c - cos * c + sin * c + tx], [sin, cos, c - sin * c - cos * c + ty], [0, 0, 1]])
