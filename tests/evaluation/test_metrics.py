"""evaluation/metrics.py against hand-computable cases and real photos (real w600k_mbf ArcFace + SCRFD)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dev.face_assets import load_photo, make_pack
from personalvideo.training.identity.reward import load_identity_reward_model
from personalvideo.evaluation.metrics import (dynamic_degree, face_similarity, horn_schunck, pad_frame,
                                           uniform_indices)
from personalvideo.training.identity.reference import build_reference


def test_uniform_indices_span_the_clip():
    assert uniform_indices(81) == [round(i * 80 / 15) for i in range(16)]
    assert uniform_indices(81)[0] == 0 and uniform_indices(81)[-1] == 80 and len(uniform_indices(81)) == 16
    assert uniform_indices(9) == list(range(9))


def test_pad_frame_centres_the_image():
    frame = torch.ones(40, 80, 3)
    padded = pad_frame(frame)
    assert padded.shape == (50, 100, 3)
    assert padded[5:45, 10:90].eq(1).all() and padded[:5].eq(0).all() and padded[:, :10].eq(0).all()


def texture(h=64, w=64, seed=0):
    """A smooth random texture (blurred noise): what optical flow can track."""
    noise = torch.rand(1, 1, h + 16, w + 16, generator=torch.Generator().manual_seed(seed))
    smooth = F.avg_pool2d(noise, 5, stride=1, padding=2)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return smooth[0, 0]


@pytest.mark.parametrize("dx, dy", [(2, 1), (1, 0), (0, 1), (-1, 2), (3, -2), (0, 0)])
def test_horn_schunck_recovers_a_known_shift(dx, dy):
    """Known answers: the texture moved by whole pixels, each axis and sign, 0 to 3 px. The median flow of the inner
    pixels is within 0.1 px of the shift (measured: at most 0.085 px off, an over-estimate of up to 8% at 1 px, from
    the smoothness term; exactly 0 for no motion). A flow scaled by 0.95, axes swapped or a sign flipped fails."""
    tex = texture(80, 80)
    a = tex[8:72, 8:72] * 255
    b = tex[8 - dy: 72 - dy, 8 - dx: 72 - dx] * 255  # content moves by (dx, dy) pixels (x, y)
    flow = horn_schunck(a[None, None], b[None, None])
    inner = flow[:, 12:-12, 12:-12]
    u, v = float(inner[0].median()), float(inner[1].median())
    assert abs(u - dx) < 0.1 and abs(v - dy) < 0.1, (u, v)


def test_dynamic_degree_static_is_zero_and_moving_is_positive():
    tex = texture(96, 160)
    static = tex[:64, :64, None].expand(64, 64, 3)[None].repeat(17, 1, 1, 1)
    moving = torch.stack([tex[:64, 3 * i: 3 * i + 64, None].expand(64, 64, 3) for i in range(17)])
    still = dynamic_degree(static, fps=16, target_fps=16)
    moved = dynamic_degree(moving, fps=16, target_fps=16)
    assert not still.dynamic and max(still.pair_magnitudes) < 1e-3
    assert moved.dynamic and min(moved.pair_magnitudes) > moved.threshold == 6 * 64 / 256


@pytest.fixture(scope="module")
def identity(tmp_path_factory):
    root = tmp_path_factory.mktemp("packs")
    make_pack(root, "vectron_s")
    return load_identity_reward_model(root / "vectron_s")


def test_face_sim_of_the_person_is_high_and_of_another_low(identity):
    reference = build_reference(identity, [load_photo("obama2.jpg")], 2, 0.05, 0.1, 0).embedding
    same = torch.stack([F.interpolate(load_photo("obama.jpg").permute(2, 0, 1)[None], size=(480, 384),
                                      mode="bilinear")[0].permute(1, 2, 0)] * 4)
    other = torch.stack([F.interpolate(load_photo("biden.jpg").permute(2, 0, 1)[None], size=(480, 384),
                                       mode="bilinear")[0].permute(1, 2, 0)] * 4)
    s, o = face_similarity(same, reference, identity), face_similarity(other, reference, identity)
    assert s.score > 50 and o.score < 25 and s.no_face_rate == 0
    # hand-computed: the per-frame number is 100 x the identity reward's cosine on the same frame
    direct = identity.reward(same[:1], reference)
    assert s.per_frame[0] == pytest.approx(100 * float(direct.similarity[0]), abs=1e-3)


def test_face_sim_without_faces_is_zero_and_counted(identity):
    blank = torch.full((5, 64, 64, 3), 0.5)
    result = face_similarity(blank, torch.randn(512), identity)
    assert result.score == 0.0 and result.no_face_rate == 1.0 and result.frames == [0, 1, 2, 3, 4]


def test_evaluate_video_node_in_comfyui(comfy, tmp_path_factory):
    """The node over real photos: a clip made of frames of the reference person vs another person."""
    import shutil

    from dev import tiny_models
    from dev.face_assets import make_dlib_folder, photo_path
    from graphs import Graph

    make_pack(comfy.model_dir("insightface") / "models", "vectron_eval")
    make_dlib_folder(comfy.model_dir("dlib") / "eval")
    for name in ("obama.jpg", "obama2.jpg", "biden.jpg"):
        shutil.copy(photo_path(name), comfy.base_dir / "input" / f"eval_{name}")
    tiny_models.register_tiny_hps_config(tmp_path_factory.mktemp("cfg"))
    tiny_models.write_tiny_hps_model_file(comfy.model_dir("hpsv2") / "eval_tiny.pt")
    results = {}
    for who in ("obama.jpg", "biden.jpg"):
        g = Graph()
        idm = g.add("PersonalVideoLoadIdentityRewardModel", pack="vectron_eval", det_size=640, det_threshold=0.5)
        ref = g.add("PersonalVideoLoadReferenceFaces", identity_reward=idm,
                    images=g.add("LoadImage", image="eval_obama2.jpg"), augmentations=2, crop_jitter=0.05,
                    colour_jitter=0.1, seed=0)
        photo = g.add("LoadImage", image=f"eval_{who}")
        clip = g.add("RepeatImageBatch", image=photo, amount=6)
        hps = g.add("PersonalVideoLoadSemanticRewardModel", model_file="eval_tiny.pt",
                    architecture=tiny_models.TINY_HPS_ARCH)
        second = g.add("PersonalVideoLoadIdentityRewardModel", pack="vectron_eval", det_size=320,
                       det_threshold=0.5)
        dlib = g.add("PersonalVideoLoadDlibFaceEvaluator", folder="models/dlib/eval", detector="hog", upsample=1)
        ev = g.add("PersonalVideoEvaluateVideo", images=clip, reference=ref, identity_reward=idm,
                   prompt="a man in a suit", fps=8.0, clip=hps, second_identity_reward=second, face_evaluator=dlib)
        g.capture([ev[0], 0], f"table_{who}")
        g.capture([ev[0], 1], f"json_{who}")
        g.capture([ev[0], 2], f"chart_{who}")
        comfy.run(g.nodes)
        import json

        results[who] = json.loads(comfy.captured()[f"json_{who}"])
    same, other = results["obama.jpg"], results["biden.jpg"]
    assert same["face_sim"] > 50 > 25 > other["face_sim"]
    # The second evaluator here is the same recognizer (the only real one on PyPI) with its own reference
    # from the aligned crops: it must agree closely; a different recognizer would be the honest check.
    assert abs(same["face_sim_2"] - same["face_sim"]) < 5 and other["face_sim_2"] < 25
    assert same["dynamic"] is False and max(same["flow_top5pct_per_pair"]) < 1e-3  # a still image repeated
    assert same["temporal_consistency"] == pytest.approx(1.0, abs=1e-4) and "clip_t" in same
    assert comfy.captured()["chart_obama.jpg"].shape == (1, 384, 768, 3)
    # dlib, another lineage of recognizer, with its reference from the reference's context crops
    assert same["face_distance_independent"] < 0.6 < other["face_distance_independent"]
    assert same["same_person_rate_independent"] == 1.0 and other["same_person_rate_independent"] == 0.0
    assert same["face_sim_independent"] > other["face_sim_independent"] and "dlib" in same["evaluators"][
        "face_sim_independent"]
    assert "Face Sim, independent evaluator" in comfy.captured()["table_obama.jpg"]


def test_evaluate_video_node_refuses_a_single_frame(comfy):
    """Motion and consistency compare frames: one image (core LoadImage of a photo) is refused, naming the input."""
    import shutil

    from dev.comfy_runtime import GraphError
    from dev.face_assets import photo_path
    from graphs import Graph

    make_pack(comfy.model_dir("insightface") / "models", "vectron_eval")
    shutil.copy(photo_path("obama2.jpg"), comfy.base_dir / "input" / "eval_one_frame.jpg")
    g = Graph()
    idm = g.add("PersonalVideoLoadIdentityRewardModel", pack="vectron_eval", det_size=640, det_threshold=0.5)
    photo = g.add("LoadImage", image="eval_one_frame.jpg")
    ref = g.add("PersonalVideoLoadReferenceFaces", identity_reward=idm, images=photo, augmentations=0,
                crop_jitter=0.05, colour_jitter=0.1, seed=0)
    ev = g.add("PersonalVideoEvaluateVideo", images=photo, reference=ref, identity_reward=idm, prompt="a man",
               fps=8.0)
    g.capture([ev[0], 0], "one_frame_table")
    with pytest.raises(GraphError, match=r"\(PersonalVideoEvaluateVideo\) failed: ValueError: images: got 1 frame, "
                                         r"expected a video of at least 2 frames; connect the whole decoded video"):
        comfy.run(g.nodes)


def test_clip_t_and_temporal_consistency_match_a_hand_computation(tmp_path):
    """CLIP-T = 100 x mean cos(image, text); consistency = mean cos of consecutive image embeddings."""
    from dev import tiny_models
    from personalvideo.evaluation.metrics import clip_scores
    from personalvideo.training.semantic.reward import load_semantic_reward_model

    tiny_models.register_tiny_hps_config(tmp_path)
    tiny_models.write_tiny_hps_model_file(tmp_path / "tiny.pt")
    model = load_semantic_reward_model(tmp_path / "tiny.pt", tiny_models.TINY_HPS_ARCH)
    frames = torch.rand(3, 48, 64, 3, generator=torch.Generator().manual_seed(2))
    clip_t, consistency = clip_scores(frames, "a man walking", model)
    with torch.no_grad():
        img = F.normalize(model.holder.module.encode_image(model.preprocess(frames)).float(), dim=-1)
        txt = model.text_features("a man walking", frames.device)[0]
    expected_t = 100 * sum(float(img[i] @ txt) for i in range(3)) / 3
    expected_c = (float(img[0] @ img[1]) + float(img[1] @ img[2])) / 2
    assert clip_t == pytest.approx(expected_t, abs=1e-4) and consistency == pytest.approx(expected_c, abs=1e-5)
