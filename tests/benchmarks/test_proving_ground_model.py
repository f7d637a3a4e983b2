"""The proving-ground model shipped in dev/proving_ground/model/ is a build of the recipe in recipe.py (issue 18).

A changed recipe without a new build fails here: the build script must reproduce what is committed, and the main
job uses the committed files only when their manifest names the current recipe's hash (recipe.committed).
"""

from __future__ import annotations

import dataclasses
import hashlib

from dev.proving_ground import recipe as recipes
from dev.proving_ground.release import meets_target


def test_the_committed_model_is_a_complete_build_of_the_full_recipe_and_meets_the_target():
    manifest = recipes.read_manifest(recipes.COMMITTED)
    assert manifest["recipe_hash"] == recipes.FULL.digest(), (
        "dev/proving_ground/model/ holds a build of another recipe: rebuild with python -m "
        "dev.proving_ground.build_model and commit it with --commit")
    assert manifest["recipe"] == dataclasses.asdict(recipes.FULL)
    assert recipes.committed() == recipes.COMMITTED == recipes.model_folder()
    size = 0
    for name, entry in manifest["files"].items():
        data = (recipes.COMMITTED / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"], name
        size += len(data)
    assert size <= 20 * 2**20  # issue 18: at most 20 MB for the diffusion model and the VAE
    assert manifest["meets_target"] and meets_target(manifest)


def test_the_committed_weights_are_fp16_at_the_recipes_sizes():
    from safetensors import safe_open

    with safe_open(str(recipes.COMMITTED / recipes.MODEL_FILE), "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
        assert f.get_tensor("head.modulation").shape[-1] == recipes.FULL.dit_dim
    with safe_open(str(recipes.COMMITTED / recipes.VAE_FILE), "pt") as f:
        dtypes |= {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()}
    import torch

    assert dtypes == {torch.float16}
