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
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks" / "proving_ground"))

import ablation

from dev.proving_ground import recipe as recipes
from dev.proving_ground.build_model import build
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
