"""Semantic reward (HPS through OpenCLIP) and the SCR loss.

No HPS/CLIP weights exist in any package, so scoring runs a tiny OpenCLIP config with random weights
(registered with ``open_clip.add_model_config``). The real HPSv2 layout (a dict whose ``state_dict``
holds OpenCLIP ViT-H-14 keys) is checked on the meta device against OpenCLIP's ViT-H-14 config, and
loaded end to end from a model file whose 986 M parameters are stride-0 views of one number each (so
the file is a few MB and nothing of ViT-H-14's size is allocated).
"""

from __future__ import annotations

import argparse

import pytest
import torch
from personalvideo.training.semantic import reward as sr

from dev.tiny_models import TINY_HPS_ARCH, register_tiny_hps_config, write_tiny_hps_model_file

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("hps")
    register_tiny_hps_config(d)
    clip = write_tiny_hps_model_file(d / "tiny_hps.pt")
    return sr.load_semantic_reward_model(d / "tiny_hps.pt", TINY_HPS_ARCH), clip, d


def test_scores_are_finite_differentiable_and_match_openclip(tiny):
    model, clip, _ = tiny
    frames = torch.rand(4, 90, 120, 3, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    scores = model.score(frames, "a person walking on a beach")
    assert scores.shape == (4,) and torch.isfinite(scores).all()
    scores.sum().backward()
    assert torch.isfinite(frames.grad).all() and frames.grad.abs().sum() > 0
    # Same number as OpenCLIP's own forward on our preprocessing, scored as hpsv2 does: the plain cosine.
    with torch.no_grad():
        import open_clip

        tokens = open_clip.get_tokenizer(TINY_HPS_ARCH)(["a person walking on a beach"])
        img, txt, _ = clip.eval()(model.preprocess(frames.detach()), tokens)
        expected = (img @ txt.T).squeeze(-1)
    assert torch.allclose(scores.detach(), expected, atol=1e-5)


def test_preprocessing_letterboxes_like_hpsv2(tiny):
    """hpsv2 resizes the longest side and pads with black (ResizeMaxSize): the whole frame stays visible."""
    model, _, _ = tiny
    # A 3:1 frame: left third red, middle white, right third blue. Resized to 64x21, padded top and bottom.
    frame = torch.zeros(1, 60, 180, 3)
    frame[:, :, :60, 0] = 1.0
    frame[:, :, 60:120] = 1.0
    frame[:, :, 120:, 2] = 1.0
    x = model.preprocess(frame)
    assert x.shape == (1, 3, 64, 64)
    mean, std = torch.tensor(sr.CLIP_MEAN), torch.tensor(sr.CLIP_STD)
    black, white = (0 - mean) / std, (1 - mean) / std
    red, blue = (torch.tensor([1.0, 0, 0]) - mean) / std, (torch.tensor([0, 0, 1.0]) - mean) / std
    assert torch.allclose(x[0, :, 2, 32], black, atol=1e-4) and torch.allclose(x[0, :, 61, 32], black, atol=1e-4)
    assert torch.allclose(x[0, :, 32, 32], white, atol=1e-3)
    assert torch.allclose(x[0, :, 32, 4], red, atol=1e-3) and torch.allclose(x[0, :, 32, 60], blue, atol=1e-3)


def test_scr_kl_is_zero_for_equal_scores_and_positive_otherwise():
    source = torch.tensor([0.26, 0.27, 0.25, 0.30])
    tuned = torch.tensor([0.30, 0.25, 0.27, 0.26], requires_grad=True)
    assert float(sr.scr_kl_loss(source.clone(), source)) == pytest.approx(0.0, abs=1e-7)
    loss = sr.scr_kl_loss(tuned, source, temperature=100.0)
    assert float(loss) > 0
    loss.backward()
    assert tuned.grad.abs().sum() > 0
    # Shifting all scores by a constant does not change the distribution; temperature sharpens it.
    assert float(sr.scr_kl_loss(source + 0.1, source)) == pytest.approx(0.0, abs=1e-6)
    assert float(sr.scr_kl_loss(tuned, source, temperature=1.0)) < float(loss) / 100
    # The definition: KL(softmax(T*t) || softmax(T*s)).
    p, q = torch.softmax(100 * tuned.detach(), 0), torch.softmax(100 * source, 0)
    assert float(loss) == pytest.approx(float((p * (p / q).log()).sum()), rel=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        sr.scr_kl_loss(tuned, source, temperature=0)
    with pytest.raises(ValueError, match=r"must both be \[M\]"):
        sr.scr_kl_loss(tuned, source[:3])


def test_loader_rejects_wrong_model_files_clearly(tiny, tmp_path):
    _, _, d = tiny
    with pytest.raises(ValueError, match=r"tiny_hps.pt: not an OpenCLIP ViT-H-14 model file: .*wrong shape.*"
                                         r"visual\..*expected.*HPS_v2_compressed.pt"):
        sr.load_semantic_reward_model(d / "tiny_hps.pt")
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="keys missing.*unexpected keys, e.g. encoder.weight"):
        sr.load_semantic_reward_model(tmp_path / "other.pt")
    # A file that needs a full unpickle (an arbitrary object inside) is refused, never unpickled.
    torch.save({"state_dict": {"x": torch.zeros(1)}, "args": argparse.Namespace(lr=1)}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="weights-only"):
        sr.load_semantic_reward_model(tmp_path / "pickled.pt")
    with pytest.raises(FileNotFoundError, match="models/hpsv2"):
        sr.load_semantic_reward_model(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="not an OpenCLIP model config"):
        sr.load_semantic_reward_model(d / "tiny_hps.pt", "ViT-Nope")


def test_safetensors_model_file_loads_the_same_model(tiny, tmp_path):
    from safetensors.torch import save_file

    model, clip, _ = tiny
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, tmp_path / "tiny.safetensors")
    again = sr.load_semantic_reward_model(tmp_path / "tiny.safetensors", TINY_HPS_ARCH)
    frames = torch.rand(2, 64, 64, 3)
    assert torch.allclose(again.score(frames, "a cat"), model.score(frames, "a cat"), atol=1e-6)


def test_real_hps_layout_checks_against_openclip_vit_h_14(tmp_path):
    meta = sr.build_clip("ViT-H-14", "meta")
    shapes = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    assert len(shapes) == 686 and sum(torch.Size(s).numel() for s in shapes.values()) == 986_109_441
    assert shapes["visual.proj"] == (1280, 1024) and shapes["text_projection"] == (1024, 1024)
    # HPS_v2(.1)_compressed.pt: {"state_dict": {OpenCLIP ViT-H-14 keys: fp16 tensors}}. Each tensor here
    # is a stride-0 view of one value, which torch.save stores as that one value.
    one = torch.ones(1, dtype=torch.float16)
    sd = {k: one.expand(s) if s else one[0].clone() for k, s in shapes.items()}
    sd["logit_scale"] = torch.tensor(4.6052, dtype=torch.float16)
    torch.save({"state_dict": sd}, tmp_path / "HPS_v2.1_compressed.pt")
    assert (tmp_path / "HPS_v2.1_compressed.pt").stat().st_size < 50e6
    model = sr.load_semantic_reward_model(tmp_path / "HPS_v2.1_compressed.pt", dtype=torch.float16)
    loaded = model.holder.module.state_dict()
    assert {k: tuple(v.shape) for k, v in loaded.items()} == shapes
    assert not any(t.is_meta for t in loaded.values()) and not model.holder.module.attn_mask.is_meta
    assert model.image_size == 224 and model.tokenizer(["a photo"]).shape == (1, 77)
    # One wrong shape in the same layout is named.
    sd["visual.proj"] = one.expand(1280, 768)
    torch.save({"state_dict": sd}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"visual.proj: \(1280, 768\) \(expected \(1280, 1024\)\)"):
        sr.load_semantic_reward_model(tmp_path / "bad.pt")


def test_scr_needs_at_least_two_frames():
    with pytest.raises(ValueError, match="frames_per_reward: got 1 frame"):
        sr.scr_kl_loss(torch.tensor([0.3]), torch.tensor([0.2]))


def test_frames_of_another_shape_are_refused(tiny):
    model, _, _ = tiny
    with pytest.raises(ValueError, match=r"frames: got shape \[48, 64, 3\], expected \[F, H, W, 3\] RGB in \[0, 1\]; "
                                         r"pass the frames as a ComfyUI IMAGE batch"):
        model.score(torch.rand(48, 64, 3), "a man")
    with pytest.raises(ValueError, match=r"frames: got shape \[2, 3, 48, 64\], expected \[F, H, W, 3\]"):
        model.score(torch.rand(2, 3, 48, 64), "a man")  # channels first
