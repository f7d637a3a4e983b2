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
from dev.proving_ground.build_model import build
from dev.proving_ground.clips import MOTIONS
from dev.proving_ground.stages import load_norm_stage, load_norm_vae, load_vae_stage

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


def test_vae_stages_are_reused_by_a_recipe_that_changes_only_the_diffusion_model(built):
    other = dataclasses.replace(SMOKE, dit_steps=SMOKE.dit_steps + 1)
    assert other.digest() != SMOKE.digest() and other.vae_digest() == SMOKE.vae_digest()
    assert other.norm_digest() == SMOKE.norm_digest()
    assert dataclasses.replace(SMOKE, vae_steps=3).vae_digest() != SMOKE.vae_digest()
    finetune = dataclasses.replace(SMOKE, vae_finetune_steps=3)
    assert finetune.vae_digest() == SMOKE.vae_digest() and finetune.norm_digest() != SMOKE.norm_digest()
    assert load_vae_stage(other) is not None
    assert load_norm_stage(other) is not None and load_norm_stage(finetune) is None
    vae = load_norm_vae(other)
    with safe_open(str(built / recipes.VAE_FILE), "pt") as f:  # the build's VAE file is the norm stage's, in fp16
        for name, value in vae.state_dict().items():
            saved = f.get_tensor(name)
            assert saved.dtype == torch.float16 and torch.equal(value.half(), saved), name
    assert load_vae_stage(dataclasses.replace(SMOKE, vae_lr=1e-3)) is None


def test_latent_statistics_are_folded_into_the_vae_exactly(built):
    """The norm stage: std 1 and mean 0 per channel after ``process_in`` on the training latents, the round trip
    unchanged by the fold, and the folded encoder giving those latents (a real encode, not arithmetic)."""
    from dev.proving_ground import latent_norm, train
    from dev.proving_ground.faces import PRETRAIN_PHOTOS, find_faces

    latents = recipes.read_manifest(built)["latents"]
    assert latents["fold_roundtrip_max_abs"] < 1e-4 and latents["fold_latent_max_abs"] < 1e-4
    assert all(abs(v) < 1e-4 for v in latents["after"]["mean"])
    assert all(abs(v - 1) < 1e-3 for v in latents["after"]["std"])
    assert latents["before"]["std"] != latents["after"]["std"]
    stage_latents, motions, _ = load_norm_stage(SMOKE)
    mean, std = latent_norm.channel_stats(stage_latents)
    assert torch.allclose(mean, torch.zeros(16), atol=1e-5) and torch.allclose(std, torch.ones(16), atol=1e-5)
    # encode_clips gives process_in(encode(clip)): with the folded encoder, the stage's normalised latents
    again, again_motions = train.encode_clips(SMOKE, load_norm_vae(SMOKE), find_faces(PRETRAIN_PHOTOS))
    assert torch.equal(again_motions, motions)
    assert torch.allclose(again, stage_latents, atol=1e-4, rtol=0)


def test_diffusion_stage_resumes_where_it_stopped_with_the_same_result(built, tmp_path):
    """A build interrupted after a checkpoint and started again ends with the weights of an uninterrupted one."""
    from dev.proving_ground import train
    from dev.proving_ground.stages import load_dit_checkpoint, save_dit_checkpoint

    latents, motions, _ = load_norm_stage(SMOKE)
    whole = train.train_dit(SMOKE, latents, motions)

    class Interrupted(Exception):
        pass

    def save_then_stop(state: dict) -> None:
        save_dit_checkpoint(tmp_path, state, [0.5] * state["step"], 1.0)
        raise Interrupted

    with pytest.raises(Interrupted):
        train.train_dit(SMOKE, latents, motions, checkpoint=save_then_stop, every=2)
    state = load_dit_checkpoint(tmp_path)
    assert state["step"] == 2 and state["losses"] == [0.5, 0.5] and state["dit_s"] == 1.0
    assert SMOKE.dit_image_steps + SMOKE.dit_steps > 2  # it stopped in the middle
    resumed = train.train_dit(SMOKE, latents, motions, resume=state).state_dict()
    for name, value in whole.state_dict().items():
        assert torch.equal(value, resumed[name]), name


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


def test_demo_graphs_sample_with_the_shift_the_model_was_trained_for(comfy):
    """Proving-ground mode puts ModelSamplingSD3 (the recipe's shift) between the model loader and everything
    that used it, and samples as the build evaluated (euler, simple, its CFG)."""
    from dev.demo import workflow_prompt
    from dev.proving_ground import demo_mode

    for name in ("train_identity_adapter_wan21", "generate_with_identity_adapter_wan21"):
        plain = workflow_prompt(name, 2)
        prompt = workflow_prompt(name, 2, proving=True)
        loader = next(k for k, n in prompt.items() if n["class_type"] == "UNETLoader")
        shift = [k for k, n in prompt.items() if n["class_type"] == "ModelSamplingSD3"]
        assert len(shift) == 1 and prompt[shift[0]]["inputs"] == {"model": [loader, 0], "shift": recipes.FULL.shift}
        readers = [k for k, n in plain.items() if [loader, 0] in n["inputs"].values()]
        assert readers and all(prompt[k]["inputs"][i] == [shift[0], 0]
                               for k in readers for i, v in plain[k]["inputs"].items() if v == [loader, 0])
        for node in prompt.values():
            if node["class_type"] in ("KSampler", "PersonalVideoTrainIdentityAdapter"):
                assert {k: node["inputs"][k] for k in demo_mode.SAMPLER} == demo_mode.SAMPLER
            if node["class_type"] == "PersonalVideoTrainIdentityAdapter":  # the ablation preset's training
                assert {k: node["inputs"][k] for k in demo_mode.TRAINING} == demo_mode.TRAINING
    evaluate = workflow_prompt("evaluate_video", 2, proving=True, dlib=True)
    node = next(n for n in evaluate.values() if n["class_type"] == "PersonalVideoEvaluateVideo")
    assert evaluate[node["inputs"]["face_evaluator"][0]]["class_type"] == "PersonalVideoLoadDlibFaceEvaluator"


def test_target_needs_faces_their_share_of_the_round_trip_and_motion():
    from dev.proving_ground.release import meets_target

    def numbers(faces, roundtrip, motion):
        return {"face_detection_rate": faces, "vae_roundtrip": {"faces_recon": roundtrip},
                "motion_follows_with_faces": motion}

    assert not meets_target(numbers(0.299, 0.597, 0.857))  # the 4-identity build of 2026-12-05
    assert meets_target(numbers(0.60, 0.70, 0.60))
    assert not meets_target(numbers(0.60, 0.80, 0.90))  # 60 % of frames but under 80 % of the round trip's 80 %
    assert not meets_target(numbers(0.90, 0.90, 0.59))


def test_commit_takes_only_a_build_that_meets_the_target_and_only_for_the_recipe_it_was_built_from(
        built, tmp_path, monkeypatch):
    import hashlib

    from dev.proving_ground import release

    monkeypatch.setattr(recipes, "COMMITTED", tmp_path / "model")
    monkeypatch.setattr(recipes, "FULL", SMOKE)  # commit() takes only the full recipe; here that is the smoke one
    manifest = recipes.read_manifest(built)
    assert manifest["meets_target"] is False  # the smoke model draws no faces
    with pytest.raises(SystemExit, match="misses the target"):
        release.commit(SMOKE, say=lambda _: None)
    assert not (tmp_path / "model").exists() and recipes.committed(SMOKE) is None
    # A build that met it (the smoke model cannot: its manifest says so here, the weights are the real build's).
    (built / recipes.MANIFEST).write_text(json.dumps(manifest | {"meets_target": True}))
    try:
        out = release.commit(SMOKE, say=lambda _: None)
    finally:
        (built / recipes.MANIFEST).write_text(json.dumps(manifest))
    assert recipes.committed(SMOKE) == out == recipes.model_folder(SMOKE)
    for name, entry in recipes.read_manifest(out)["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == entry["sha256"]
    other = dataclasses.replace(SMOKE, dit_steps=SMOKE.dit_steps + 1)
    assert recipes.committed(other) is None  # a changed recipe is a new build, not the committed one


@pytest.fixture(scope="module")
def stem(comfy, built):
    """The smoke recipe with the default evaluation settings: the prefix of every smoke continuation or polish
    (evaluation settings change no weights, so a prefix evaluates as the defaults do)."""
    recipe = dataclasses.replace(SMOKE, **{k: getattr(recipes.Recipe, k) for k in recipes._EVAL_FIELDS})
    folder = build(comfy, recipe, say=lambda _: None)
    # the same training as the smoke build: the same diffusion model, byte for byte
    assert (folder / recipes.MODEL_FILE).read_bytes() == (built / recipes.MODEL_FILE).read_bytes()
    return recipe, folder


def test_a_continuation_starts_from_its_prefix_builds_model_and_leaves_the_prefix_hash_alone(comfy, built, stem):
    prefix, prefix_folder = stem
    longer = dataclasses.replace(SMOKE, dit_more_steps=2)
    assert SMOKE.prefix() == SMOKE and longer.prefix() == prefix
    assert dataclasses.replace(longer, eval_clips=12).prefix() == prefix  # more evaluation, the same prefix
    again = dataclasses.replace(longer, dit_more_rounds=2)  # a second round starts from the first round's model
    assert again.prefix() == dataclasses.replace(prefix, dit_more_steps=2) and again.digest() != longer.digest()
    assert dataclasses.replace(SMOKE, dit_more_rounds=2).digest() == SMOKE.digest()  # rounds of nothing: no change
    # without a continuation the hash is that of the recipe before the continuation's fields existed (builds and
    # the README's hashes stay valid)
    before = {k: v for k, v in dataclasses.asdict(SMOKE).items() if not k.startswith(("dit_more", "vae_polish"))}
    assert recipes._hash(before) == SMOKE.digest() == recipes.read_manifest(built)["recipe_hash"]
    assert longer.digest() != SMOKE.digest() and longer.vae_digest() == SMOKE.vae_digest()
    stamp = (prefix_folder / recipes.MANIFEST).stat().st_mtime_ns
    folder = build(comfy, longer, say=lambda _: None)
    assert folder == recipes.build_dir(longer) != prefix_folder
    assert (prefix_folder / recipes.MANIFEST).stat().st_mtime_ns == stamp  # the prefix was reused, not rebuilt
    manifest = recipes.read_manifest(folder)
    assert manifest["recipe"]["dit_more_steps"] == 2 and len(manifest["dit_loss_by_tenth"]) == 2
    with safe_open(str(built / recipes.MODEL_FILE), "pt") as a, safe_open(str(folder / recipes.MODEL_FILE), "pt") as b:
        changed = [k for k in a.keys() if not torch.equal(a.get_tensor(k), b.get_tensor(k))]
    assert changed  # two more steps moved the prefix's weights


def test_a_polish_trains_only_the_decoder_and_keeps_the_prefix_builds_diffusion_model(comfy, built, stem):
    prefix, prefix_folder = stem
    polished = dataclasses.replace(SMOKE, vae_polish_steps=2)
    assert polished.prefix() == prefix and polished.norm_digest() == SMOKE.norm_digest()
    assert polished.digest() != SMOKE.digest() and polished.polish_digest() != dataclasses.replace(
        polished, vae_polish_lr=1e-3).polish_digest()
    stamp = (prefix_folder / recipes.MANIFEST).stat().st_mtime_ns
    folder = build(comfy, polished, say=lambda _: None)
    assert folder == recipes.build_dir(polished) != built
    assert (prefix_folder / recipes.MANIFEST).stat().st_mtime_ns == stamp  # the prefix was reused, not rebuilt
    # the same diffusion model, byte for byte: the encoder is frozen, so its latents are still the model's
    assert (folder / recipes.MODEL_FILE).read_bytes() == (prefix_folder / recipes.MODEL_FILE).read_bytes()
    with safe_open(str(built / recipes.VAE_FILE), "pt") as a, safe_open(str(folder / recipes.VAE_FILE), "pt") as b:
        changed = {k for k in a.keys() if not torch.equal(a.get_tensor(k), b.get_tensor(k))}
    assert changed and all(k.startswith(("decoder.", "conv2.")) for k in changed)
    manifest = recipes.read_manifest(folder)
    assert manifest["vae_polish_s"] > 0 and manifest["dit_s"] == recipes.read_manifest(prefix_folder)["dit_s"]
    assert 0.0 <= manifest["face_detection_rate"] <= 1.0


def test_the_two_faces_probe_counts_faces_in_wide_and_tall_clips(comfy, built):
    from benchmarks.proving_ground.two_faces import count_faces

    counts = count_faces(comfy, built, 1)
    assert set(counts) == {"256x128", "128x256"}
    assert all(len(clip) == SMOKE.frames and all(c >= 0 for c in clip) for clips in counts.values() for clip in clips)
