"""The build's last VAE stage: more decoder-only training on whole clips, as the build samples them.

The VAE trains on 64-pixel crops of single frames and 5-frame clips (cheap), and its decoder is fine-tuned the same
way after the fold (latent_norm.py); the model's clips are 9 frames (3 latent frames) of the whole 128-pixel frame.
Measured on the 4-identity build: its round trip keeps faces in 59.7 % of frames (source clips: 87.5 %), and the
last frame of a clip in 1 of 8. The polish trains ``conv2`` and the decoder only, on whole clips of
``recipe.frames`` frames: the encoder is frozen, so the latents the diffusion model learnt are the same and a
polish never retrains the diffusion model (a recipe with a polish reuses its prefix build's diffusion model).

Cached in ``<cache>/polish_stage/<polish digest>/`` (the norm stage's fields and the polish's).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dev.proving_ground import recipe as recipes
from dev.proving_ground.recipe import VAE_FILE, Recipe

POLISH_STAGE = "polish_stage.json"  # marker written after the VAE file


def polish_decoder(recipe: Recipe, vae, faces, progress: Callable[[str, int, float], None] | None = None,
                   inspect: Callable[[int, torch.nn.Module], None] | None = None):
    """``recipe.vae_polish_steps`` decoder steps on ``recipe.vae_polish_batch`` whole clips each; ``vae`` (the
    norm stage's folded VAE) is trained in place and returned."""
    from dev.proving_ground.clips import random_clip
    from dev.proving_ground.latent_norm import train_decoder
    from dev.proving_ground.train import _to_video

    def batch(step: int, gen: torch.Generator) -> torch.Tensor:
        return _to_video([random_clip(faces, gen, recipe.res, recipe.frames, strength=recipe.motion_strength)[0]
                          for _ in range(recipe.vae_polish_batch)])

    return train_decoder(vae, batch, recipe.vae_polish_steps, recipe.vae_polish_lr, recipe.vae_latent_noise,
                         torch.Generator().manual_seed(recipe.seed + 5), progress, "vae_polish", inspect)


def stage_dir(recipe: Recipe):
    return recipes.cache_root() / "polish_stage" / recipe.polish_digest()


def load_or_make(recipe: Recipe, faces, progress=None) -> tuple[dict, float]:
    """(the polished VAE's state dict, seconds its polish took), from the stage cache or trained now."""
    import time

    from dev.proving_ground import stages

    folder = stage_dir(recipe)
    marker = stages.read_marker(folder / POLISH_STAGE)
    if marker and marker.get("polish_digest") == recipe.polish_digest() and (folder / VAE_FILE).is_file():
        return stages.load(folder / VAE_FILE), marker["vae_polish_s"]
    t = time.perf_counter()
    vae = polish_decoder(recipe, stages.load_norm_vae(recipe), faces, progress)
    seconds = time.perf_counter() - t
    folder.mkdir(parents=True, exist_ok=True)
    stages.save(vae.state_dict(), folder / VAE_FILE)
    stages.write_marker(folder / POLISH_STAGE, {"polish_digest": recipe.polish_digest(),
                                                "vae_polish_s": round(seconds, 1)})
    return vae.state_dict(), seconds


def polish_prefix_build(recipe: Recipe, folder, progress=None, say=print) -> dict:
    """The build of a recipe with a polish, in ``folder``: the diffusion model of its prefix build (complete,
    built first) and the polished VAE. Returns the build's timings and training numbers (the prefix's, plus
    ``vae_polish_s``)."""
    import shutil

    from personalvideo.training.atomic import write_atomic

    from dev.proving_ground import stages
    from dev.proving_ground.faces import PRETRAIN_PHOTOS, find_faces
    from dev.proving_ground.recipe import MODEL_FILE

    prefix = recipes.cached(recipe.prefix())
    if prefix is None:
        raise RuntimeError(f"polish: the prefix build {recipe.prefix().digest()} is not complete; build it first")
    before = recipes.read_manifest(prefix)
    say(f"diffusion model of recipe {recipe.prefix().digest()} ({prefix}); polishing its VAE's decoder")
    state, seconds = load_or_make(recipe, find_faces(PRETRAIN_PHOTOS), progress)
    write_atomic(folder / MODEL_FILE, lambda tmp: shutil.copyfile(prefix / MODEL_FILE, tmp))
    stages.save(state, folder / VAE_FILE, torch.float16)
    keep = ("faces", "estimate_s", "vae_s", "encode_s", "vae_finetune_s", "dit_s", "latents", "dit_loss_by_tenth")
    return {**{k: before[k] for k in keep if k in before}, "vae_polish_s": round(seconds, 1)}
