"""Automatic regions: faces found in the base model's prediction at the gate, in real ComfyUI, with the real SCRFD
detector and ArcFace (w600k_mbf) on real photos.

The tiny models are random: the tiny Wan VAE decodes any latent to noise, so no face can come out of it (that path is
tested too: nothing is found, it says so, and the video stays the base model's). Where faces must come out of the
decoder, a stand-in returns a real photo video (dev/two_people.PhotoDecoder, said there); everything around it, the
prediction it is given, detection, tracking, assignment, masks and routing, is the real code in a real sampler run.
"""

from __future__ import annotations

import logging

import pytest
import torch

from dev.face_assets import load_photo, make_pack
from dev.proving_ground.faces import load_photo as load_photo_array
from dev.two_people import PhotoDecoder, two_people
from graphs import WAN_VAE, pack_module, rel_err
from routing_helpers import RouteSpy, adapter, conditioning, install_routing_loras, node, routed, sample

AUTOMATIC = "automatic (faces at the gate)"


@pytest.fixture(scope="module")
def models(comfy):
    install_routing_loras(comfy)
    make_pack(comfy.model_dir("insightface") / "models", "vectron_routing")
    identity = node("PersonalVideoLoadIdentityRewardModel").execute("vectron_routing", 640, 0.5).args[0]
    import nodes

    return identity, nodes.VAELoader().load_vae(WAN_VAE)[0]


def token_frame(frame: int) -> int:
    return 0 if frame == 0 else (frame - 1) // 4 + 1


def test_regions_on_a_real_group_photo_contain_every_face(models):
    """insightface's t1.jpg (six people), panned over 9 frames at 320x224 and encoded by the tiny Wan VAE through
    core VAEEncode: each face's SCRFD box lies inside its person's tokens in every frame, and no token has two."""
    import nodes
    import numpy as np
    import torch.nn.functional as F

    identity, vae = models
    photo = torch.from_numpy(np.asarray(load_photo_array("t1.jpg"), dtype=np.float32) / 255.0)
    wide = F.interpolate(photo.permute(2, 0, 1)[None], size=(224, 338), mode="bilinear")[0].permute(1, 2, 0)
    video = torch.stack([wide[:, 2 * f: 2 * f + 320] for f in range(9)]).clamp(0, 1)
    latent = nodes.VAEEncode().encode(vae, video)[0]["samples"]
    assert latent.shape == (1, 16, 3, 28, 40)
    names = [f"identity {i + 1}" for i in range(6)]
    regions = pack_module("nodes.runtime.routing_regions").AutomaticRegions(vae, identity, [None] * 6, names,
                                                                            "left to right", 1.8, True)
    masks = regions.video_masks(video, tuple(latent.shape[2:]), (1, 2, 2))
    assert masks.shape == (6, 3, 14, 20) and masks.sum(0).max() == 1
    token_box = pack_module("training.routing.regions").token_box
    for f in range(9):
        faces = sorted(identity.detect(video[f]), key=lambda face: face.box[0])
        assert len(faces) == 6, f"frame {f}"
        for person, face in enumerate(faces):
            r0, c0, r1, c1 = token_box(face.box, (224, 320), (14, 20))
            assert masks[person, token_frame(f), r0:r1, c0:c1].all(), (f, person, face.box)
    assert "6 face(s) found" in regions.reports[-1]


def test_closest_reference_finds_each_person_by_likeness(models):
    identity, vae = models
    build = pack_module("training.identity.reference").build_reference
    obama, biden = (build(identity, [load_photo(n)], 2, 0.05, 0.1, 0) for n in ("obama2.jpg", "biden.jpg"))
    video = two_people(128, 256)  # Obama left, Biden right
    module = pack_module("nodes.runtime.routing_regions")
    by_likeness = module.AutomaticRegions(vae, identity, [biden, obama], ["Biden", "Obama"], "closest reference",
                                          1.8, True).video_masks(video, (3, 16, 32), (1, 2, 2))
    by_order = module.AutomaticRegions(vae, identity, [biden, obama], ["Biden", "Obama"], "left to right", 1.8,
                                       True).video_masks(video, (3, 16, 32), (1, 2, 2))
    left, right = slice(0, 8), slice(8, 16)
    assert by_likeness[0, :, :, right].sum() > 0 and by_likeness[0, :, :, left].sum() == 0
    assert by_order[0, :, :, left].sum() > 0 and by_order[0, :, :, right].sum() == 0


def test_regions_at_the_gate_in_a_sampler_run(models, monkeypatch):
    """Gate at step 6 of 8: the decoder gets the CFG-combined prediction of step 5 (the last base step), the faces it
    shows become each person's tokens, and at the first gated layer only those tokens change."""
    identity, vae = models
    decoder = PhotoDecoder(vae, two_people(128, 256))
    spy = RouteSpy(monkeypatch)
    people = [(adapter("wan21", "image"), None), (adapter("wan21", "other"), None)]
    steps = []
    apply = routed(people, regions=AUTOMATIC, vae=decoder, identity_reward=identity,
                   face_count_mismatch="stop with an error")
    patched = {}
    out = sample("wan21", lambda m: patched.setdefault("m", apply(m)), size=(16, 32),
                 callback=lambda i, x0, x, n: steps.append(x0.clone()))
    base_model = patched["m"].model
    assert len(decoder.latents) == 1  # decided once per sampler run
    assert torch.equal(decoder.latents[0], base_model.process_latent_out(steps[5]))
    routed_rows = spy.first("blocks.0.self_attn.q").reshape(2, 3, 8, 16, -1)
    own_rows = spy.first("blocks.0.self_attn.q", routed=False).reshape(2, 3, 8, 16, -1)
    changed = (routed_rows != own_rows).any(-1)[0]
    left, right = changed[..., :8], changed[..., 8:]
    assert left.any() and right.any() and not changed.all()  # each person's face, nothing else
    assert torch.isfinite(out).all() and rel_err(out, sample("wan21", lambda m: m, size=(16, 32))) > 1e-4


def test_a_gate_at_the_runs_first_call_predicts_once_more_without_adapters(models):
    """Split sampling (two sampler runs, the second starting at the gate): no earlier call in that run, so the base
    model's positive prediction at the gate's sigma is made once without adapters (cfg 1: it is the x0 itself)."""
    import comfy.sample
    import nodes

    identity, vae = models
    decoder = PhotoDecoder(vae, two_people(128, 256))
    apply = routed([(adapter("wan21", "image"), None), (adapter("wan21", "other"), None)], regions=AUTOMATIC,
                   vae=decoder, identity_reward=identity)
    base_steps = []
    sample("wan21", lambda m: m, cfg=1.0, size=(16, 32), callback=lambda i, x0, x, n: base_steps.append(x0.clone()))
    model = apply(nodes.UNETLoader().load_unet("tiny_wan21.safetensors", "default")[0])
    pos, neg = conditioning("wan21")
    shape = (1, 16, 3, 16, 32)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(11))
    first = comfy.sample.sample(model, noise, 8, 1.0, "euler", "simple", pos, neg, torch.zeros(shape), seed=11,
                                last_step=6, disable_pbar=True)
    comfy.sample.sample(model, torch.zeros(shape), 8, 1.0, "euler", "simple", pos, neg, first, seed=11,
                        start_step=6, disable_noise=True, force_full_denoise=True, disable_pbar=True)  # as
    # KSamplerAdvanced with add_noise disabled: zero noise, continuing from the first run's leftover noise
    assert len(decoder.latents) == 1
    # the prediction at sigma_6, not the one before (sigma_5); not bit-exact: between the two sampler runs the latent
    # goes out of and back into the model's latent space (process_latent_out/in), 1.4e-6 apart at most
    at_gate, before = (model.model.process_latent_out(base_steps[i]) for i in (6, 5))
    assert rel_err(decoder.latents[0], at_gate) <= 1e-5 < 1e-3 < rel_err(decoder.latents[0], before)


def test_no_face_in_the_tiny_vaes_decode_is_said_and_leaves_the_base(models, caplog):
    identity, vae = models
    people = [(adapter("wan21", "image"), None), (adapter("wan21", "other"), None)]
    base = sample("wan21", lambda m: m)
    with caplog.at_level(logging.WARNING):
        out = sample("wan21", routed(people, regions=AUTOMATIC, vae=vae, identity_reward=identity))
    assert torch.equal(out, base)
    assert "found 0 face(s) for 2 identities: no face left for identity 1" in caplog.text
    with pytest.raises(ValueError, match=r"found 0 face\(s\) for 2 identities.*set face_count_mismatch"):
        sample("wan21", routed(people, regions=AUTOMATIC, vae=vae, identity_reward=identity,
                               face_count_mismatch="stop with an error"))
