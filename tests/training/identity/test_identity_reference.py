"""Reference identity and the loader's errors, with the real w600k_mbf / SCRFD-500m models and real photos."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx

import pytest
import torch
import torch.nn.functional as F
from dev.face_assets import load_photo, make_pack, vectron_dir
from personalvideo.training.identity.arcface import ArcFaceTorch
from personalvideo.training.identity.reward import load_identity_reward_model
from personalvideo.training.identity.reference import build_reference


def _recognizer(path) -> ArcFaceTorch:
    """The differentiable recognizer of an ONNX file, as the reward model builds it from its pack."""
    return ArcFaceTorch(onnx.load(str(path)), Path(path).name)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_identity_reward_model(make_pack(tmp_path_factory.mktemp("packs")))


def _resize(img: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return F.interpolate(img.permute(2, 0, 1)[None], size=(h, w), mode="bilinear", antialias=True,
                         align_corners=False)[0].permute(1, 2, 0).clamp(0, 1)


def test_one_photo_is_enough_and_augmentation_is_seeded(model):
    img = load_photo("obama.jpg")
    a = build_reference(model, [img], augmentations=4, seed=3)
    b = build_reference(model, [img], augmentations=4, seed=3)
    c = build_reference(model, [img], augmentations=4, seed=4)
    plain = build_reference(model, [img], augmentations=0)
    assert a.embedding.shape == (512,) and abs(float(a.embedding.norm()) - 1) < 1e-5
    assert torch.equal(a.embedding, b.embedding)
    assert not torch.equal(a.embedding, c.embedding)
    # Augmented views move the embedding a little, not to another person.
    assert 0.9 < float(a.embedding @ plain.embedding) < 0.99999
    assert a.crops.shape == (1, 112, 112, 3) and a.notes == []


def test_pairwise_similarity_flags_a_mix_of_people(model):
    same = build_reference(model, [load_photo(n) for n in ("obama.jpg", "obama2.jpg", "obama3.jpg")],
                           augmentations=0)
    assert same.min_pairwise > 0.5 and not any("different people" in n for n in same.notes)
    mixed = build_reference(model, [load_photo(n) for n in ("obama.jpg", "obama2.jpg", "biden.jpg")],
                            augmentations=0)
    assert mixed.min_pairwise < 0.3
    assert any("references 1 and 3" in n or "references 2 and 3" in n for n in mixed.notes), mixed.notes
    assert "different people" in mixed.report()
    # The mean of several same-person references is closer to each of them than they are to each other.
    assert float((same.per_reference @ same.embedding).min()) > same.min_pairwise


def test_several_faces_use_the_largest_and_say_so(model):
    """A known answer: four one-person photos pasted side by side on a grey canvas, one of them (Biden) twice as large
    as the others. The reference must count 4 faces, say so, and use the one in Biden's tile."""
    tiles = {"obama.jpg": 200, "obama2.jpg": 200, "biden.jpg": 400, "yaoming.jpg": 200}  # name -> tile height
    canvas, x, boxes = torch.full((400, 1100, 3), 0.5), 0, {}
    for name, h in tiles.items():
        photo = load_photo(name)
        photo = photo[: photo.shape[1]] if photo.shape[0] > photo.shape[1] else photo  # portraits: the top square
        w = round(photo.shape[1] * h / photo.shape[0])
        canvas[:h, x: x + w] = _resize(photo, h, w)
        boxes[name], x = (x, x + w), x + w
    assert x <= canvas.shape[1]
    ref = build_reference(model, [canvas], augmentations=0)
    assert ref.face_counts == [4] and "4 faces" in ref.notes[0] and "largest" in ref.report(), ref.report()
    x0, x1 = boxes["biden.jpg"]
    assert x0 <= ref.faces[0].box[0] and ref.faces[0].box[2] <= x1, (ref.faces[0].box, boxes)
    alone = build_reference(model, [load_photo("biden.jpg")], augmentations=0)
    assert float(ref.embedding @ alone.embedding) > 0.8


def test_grayscale_rgba_tiny_and_very_large_images(model):
    colour = build_reference(model, [load_photo("obama2.jpg")], augmentations=0).embedding
    gray = build_reference(model, [load_photo("obama2.jpg", mode="L")], augmentations=0)  # [H, W, 1]
    rgba = build_reference(model, [load_photo("32bit.png", mode="RGBA")], augmentations=0)  # obama2 as RGBA
    assert float(gray.embedding @ colour) > 0.8
    assert float(rgba.embedding @ colour) > 0.95
    yao = load_photo("yaoming.jpg")  # 287x233, face about 105 px wide
    yao_ref = build_reference(model, [yao], augmentations=0).embedding
    tiny = build_reference(model, [_resize(yao, 72, 58)], augmentations=0)  # face about 26 px wide
    large = build_reference(model, [_resize(yao, 4592, 3728)], augmentations=0)  # 17 Mpx
    assert tiny.image_sizes == [(72, 58)] and large.image_sizes == [(4592, 3728)]
    assert float(tiny.embedding @ yao_ref) > 0.5
    assert float(large.embedding @ yao_ref) > 0.9
    # Reported boxes are in the input image's pixels, whatever upscaling the detector needed.
    assert tiny.faces[0].box[2] <= 58 + 2 and large.faces[0].box[2] > 1000


def test_close_up_without_margin_is_found_by_padding(model):
    img = load_photo("yaoming.jpg")
    face = max(model.detect(img), key=lambda f: f.area)
    x1, y1, x2, y2 = face.box.round().astype(int)
    close_up = img[max(y1, 0):y2, max(x1, 0):x2]
    ref = build_reference(model, [close_up], augmentations=0)
    assert ref.face_counts == [1]


def test_no_face_and_empty_inputs_give_clear_errors(model):
    photo = load_photo("obama.jpg")
    blank = torch.full((300, 400, 3), 0.5)
    with pytest.raises(ValueError, match=r"no face found in image 2 of 2 \(400x300\)"):
        build_reference(model, [photo, blank])
    with pytest.raises(ValueError, match="got no image"):
        build_reference(model, [])


def test_pack_errors_name_the_folder_and_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*models/insightface/models"):
        load_identity_reward_model(tmp_path / "antelopev2")
    only_rec = make_pack(tmp_path, "no_detector", files=("w600k_mbf.onnx", "2d106det.onnx"))
    with pytest.raises(FileNotFoundError, match="no_detector: no SCRFD face detector.*w600k_mbf.onnx \\(recognizer\\)"):
        load_identity_reward_model(only_rec)
    only_det = make_pack(tmp_path, "no_recognizer", files=("scrfd_500m_bnkps.onnx", "2d106det.onnx"))
    with pytest.raises(FileNotFoundError, match="no_recognizer: no ArcFace recognizer.*2d106det.onnx \\(other\\)"):
        load_identity_reward_model(only_det)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .onnx files"):
        load_identity_reward_model(tmp_path / "empty")


def test_an_onnx_that_is_not_a_recognizer_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not an ArcFace recognizer: its input is 192x192"):
        _recognizer(vectron_dir() / "2d106det.onnx")
    with pytest.raises(ValueError, match="not an ArcFace recognizer: it has 9 outputs \\(a face detector\\)"):
        _recognizer(vectron_dir() / "scrfd_500m_bnkps.onnx")
    shutil.copy(vectron_dir() / "dist_cosine.onnx", tmp_path / "dist_cosine.onnx")
    with pytest.raises(ValueError, match="not an ArcFace recognizer"):
        _recognizer(tmp_path / "dist_cosine.onnx")


def test_context_crops_hold_each_face_centred_for_an_independent_recognizer(model):
    """The unaligned context crop is what a recognizer with its own detector (dlib) embeds the reference from:
    the same face, centred, about 1/2.5 of the crop, also for a small face in a group photo."""
    photos = [load_photo("obama.jpg"), load_photo("players.jpg")]
    ref = build_reference(model, photos, augmentations=0)
    assert ref.context_crops.shape == (2, 384, 384, 3)
    for i, crop in enumerate(ref.context_crops):
        faces = model.detect(crop)
        face = max(faces, key=lambda f: f.area)
        cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
        assert abs(cx - 192) < 30 and abs(cy - 192) < 30, face.box
        side = max(face.box[2] - face.box[0], face.box[3] - face.box[1])
        assert 384 / 2.5 * 0.8 < side < 384 / 2.5 * 1.2, side
        # the same person as the aligned reference crop
        emb = model.embed_faces(crop[None], [face])[0]
        assert float(emb @ ref.per_reference[i]) > 0.8


def test_reference_images_of_another_shape_are_refused_naming_the_image(model):
    photo = load_photo("obama.jpg")
    with pytest.raises(ValueError, match=r"reference images: image 2 has shape \[1, 32, 32, 3\], expected \[H, W, C\]; "
                                         r"pass each photo as one image"):
        build_reference(model, [photo, torch.rand(1, 32, 32, 3)], augmentations=0)
    with pytest.raises(ValueError, match=r"reference images: image 1 has 5 channels, expected 1, 3 or 4; convert it "
                                         r"to RGB"):
        build_reference(model, [torch.rand(32, 32, 5)], augmentations=0)
