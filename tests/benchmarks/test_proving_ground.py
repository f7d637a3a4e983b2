"""The proving-ground build script and the ablation script, end to end at the smoke size, in real ComfyUI.

The smoke recipe runs the same code as the full one with a few training steps, so its model draws no faces:
these tests check that the scripts work (files written, shapes ComfyUI loads, metrics finite, the cache and
manifest logic), not the model's quality; the full build's numbers are in benchmarks/proving_ground/README.md.
Real parts: ComfyUI's Wan 2.1 classes and loaders, the real face photos, SCRFD and ArcFace, the pack's nodes.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from safetensors import safe_open

from benchmarks.proving_ground import ablation
from dev.proving_ground import recipe as recipes
from dev.proving_ground.build_model import build, load_vae_stage
from dev.proving_ground.clips import MOTIONS

SMOKE = recipes.SMOKE


@pytest.fixture(scope="module")
def built(comfy, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv(recipes.CACHE_ENV, str(tmp_path_factory.mktemp("proving_ground_cache")))
    folder = build(comfy, SMOKE, say=lambda _: None)
    yield folder
    mp.undo()


def test_build_writes_weights_comfy_loads_and_a_manifest_of_its_recipe(built):
    assert built == recipes.build_dir(SMOKE) and built.parent == recipes.cache_root()
    manifest = recipes.read_manifest(built)
    assert manifest["recipe_hash"] == SMOKE.digest() and manifest["recipe"] == dataclasses.asdict(SMOKE)
    assert len(manifest["eval_clips"]) == SMOKE.eval_clips * len(MOTIONS)
    assert 0.0 <= manifest["face_detection_rate"] <= 1.0 and 0.0 <= manifest["motion_follows_prompt"] <= 1.0
    assert manifest["faces"] > 30  # the pre-training photos' faces (Obama held out)
    assert (built / "samples.png").stat().st_size > 0
    with safe_open(str(built / recipes.MODEL_FILE), "pt") as f:
        assert f.get_tensor("head.modulation").shape[-1] == SMOKE.dit_dim  # what ComfyUI's Wan detection reads
    with safe_open(str(built / recipes.VAE_FILE), "pt") as f:
        assert f.get_tensor("decoder.head.0.gamma").shape[0] == SMOKE.vae_dim


def test_cache_is_used_only_for_the_same_recipe(built):
    stamp = (built / recipes.MANIFEST).stat().st_mtime_ns
    assert build(None, SMOKE, say=lambda _: None) == built  # cached: no runtime needed, nothing rebuilt
    assert (built / recipes.MANIFEST).stat().st_mtime_ns == stamp
    assert recipes.cached(dataclasses.replace(SMOKE, seed=1)) is None
    assert dataclasses.replace(SMOKE, seed=1).digest() != SMOKE.digest()
    manifest = recipes.read_manifest(built)
    (built / recipes.MANIFEST).write_text(json.dumps(manifest | {"recipe_hash": "0" * 16}))
    try:
        assert recipes.cached(SMOKE) is None  # a manifest of another recipe is not this build
    finally:
        (built / recipes.MANIFEST).write_text(json.dumps(manifest))
    assert recipes.cached(SMOKE) == built


def test_vae_stage_is_reused_by_a_recipe_that_changes_only_the_diffusion_model(built):
    other = dataclasses.replace(SMOKE, dit_steps=SMOKE.dit_steps + 1)
    assert other.digest() != SMOKE.digest() and other.vae_digest() == SMOKE.vae_digest()
    assert dataclasses.replace(SMOKE, vae_steps=3).vae_digest() != SMOKE.vae_digest()
    stage = load_vae_stage(other)
    assert stage is not None
    vae = stage[0]
    with safe_open(str(built / recipes.VAE_FILE), "pt") as f:  # the build's VAE file is the stage's VAE
        for name, value in vae.state_dict().items():
            assert torch.equal(value, f.get_tensor(name)), name
    assert load_vae_stage(dataclasses.replace(SMOKE, vae_lr=1e-3)) is None


def test_ablation_runs_every_arm_through_the_nodes(comfy, built, tmp_path):
    arms, motions = ["base", "gate 0.75"], MOTIONS[:2]
    out = ablation.run(comfy, SMOKE, built, train_steps=1, seeds=1, arms=arms, output=tmp_path, motions=motions)
    data = json.loads(out.read_text())
    assert [a["arm"] for a in data["arms"]] == arms
    for arm in data["arms"]:
        assert [c["motion"] for c in arm["clips"]] == list(motions)
        for clip in arm["clips"]:
            assert math.isfinite(clip["face_sim"]) and math.isfinite(clip["flow"]) and clip["flow"] >= 0
            assert 0.0 <= clip["no_face_rate"] <= 1.0 and isinstance(clip["follows_prompt"], bool)
    assert data["arms"][0]["training_summary"] == ""  # base: nothing trained
    assert "1 steps (" in data["arms"][1]["training_summary"] and "gate start 0.75" in data["arms"][1]["training_summary"]
    table = ablation.table(data["arms"])
    assert table.count("\n") == 1 + len(arms) and "gate 0.75" in table


class _IdentityVAE:
    """Stand-in for a perfect autoencoder (encode and decode pass the video through): checks the measurement."""

    def encode(self, video):
        return video

    def decode(self, latent):
        return latent


def test_vae_check_measures_reconstructions_against_their_sources(comfy):
    import torch

    from dev.proving_ground.faces import PRETRAIN_PHOTOS, detector, find_faces
    from dev.proving_ground.train import _edge_l1, train_vae
    from dev.proving_ground.vae_check import reconstruction_check

    det = detector()
    faces = find_faces(PRETRAIN_PHOTOS, det)
    perfect = reconstruction_check(_IdentityVAE(), SMOKE, faces, det, clips=2)
    assert perfect["frames"] == 2 * SMOKE.frames and perfect["recon_l1"] < 1e-6
    assert perfect["faces_source"] > 0 and perfect["faces_recon"] == perfect["faces_source"]
    assert perfect["faces_kept"] == 1.0
    smoke = reconstruction_check(train_vae(SMOKE, faces, edge_weight=1.0), SMOKE, faces, det, clips=1)
    assert smoke["frames"] == SMOKE.frames and smoke["recon_l1"] > 0.01  # 2 training steps: far from perfect
    assert 0.0 <= smoke["faces_recon"] <= 1.0 and 0.0 <= smoke["faces_kept"] <= 1.0
    x = torch.rand(1, 3, 1, 16, 16)
    blurred = torch.nn.functional.avg_pool2d(x[:, :, 0], 3, 1, 1)[:, :, None]
    assert float(_edge_l1(x, x)) == 0.0 and float(_edge_l1(blurred, x)) > 0.1
