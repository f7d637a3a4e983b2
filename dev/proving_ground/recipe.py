"""The proving-ground model's recipe (every size, step count and seed), its hash, and the cache it builds into.

A cached build is used only when its manifest records the same recipe hash: change anything here (or pass other
sizes) and the next run rebuilds. The cache lives in ``<repo>/.cache/proving_ground/`` unless
``$PERSONALVIDEO_PROVING_GROUND_CACHE`` names another folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE_ENV = "PERSONALVIDEO_PROVING_GROUND_CACHE"
RECIPE_VERSION = 3  # bump when the training code changes what a recipe produces
VAE_VERSION = 2  # the same for the VAE stage alone (its training code is unchanged since recipe version 2)
MODEL_FILE = "proving_ground_wan21.safetensors"
VAE_FILE = "proving_ground_wan21_vae.safetensors"
MANIFEST = "manifest.json"
VAE_STAGE = "vae_stage.json"  # marker written after the VAE file in vae_stage_dir()
NORM_STAGE = "norm_stage.json"  # marker written after the folded VAE and the latents in norm_stage_dir()
LATENTS_FILE = "latents.safetensors"
DIT_CHECKPOINT = "dit_checkpoint.safetensors"  # the diffusion stage's periodic state (a build resumes from it)


@dataclass(frozen=True)
class Recipe:
    res: int = 128  # frame side (pixels): a face of ~60 px, 7-8 latent pixels (at 64 px the VAE blurs it away)
    frames: int = 9  # 4k+1: 3 latent frames
    seed: int = 0
    motion_strength: float = 0.35  # scales the clips' pans and zooms (clips.trajectory); at 1.0 the VAE's
    # 4-frame latents lose the fast-moving face
    vae_dim: int = 8  # WanVAE base width (the real Wan 2.1 VAE: 96)
    vae_steps: int = 2000
    vae_batch: int = 8  # single frames per step; every other step 2 clips of 5 frames instead
    vae_crop: int = 64  # the VAE is convolutional: it trains on random crops of the frames (4x cheaper)
    vae_lr: float = 2e-3
    vae_finetune_steps: int = 400  # decoder-only steps after the latent statistics are folded in (latent_norm.py)
    vae_finetune_lr: float = 5e-4
    vae_latent_noise: float = 0.1  # noise on the unit-variance latents the decoder fine-tunes on
    # The polish (decoder_polish.py): decoder-only steps on whole clips after everything else; 0: none.
    vae_polish_steps: int = 0
    vae_polish_lr: float = 2.5e-4
    vae_polish_batch: int = 2  # whole clips per step
    clips: int = 768  # training clips encoded once for the diffusion model
    dit_translate: float = 0.0  # the face's place in those clips moves by up to this share of the frame side
    identities: int = 4  # the diffusion model's clips show only the N largest faces (0: all of them)
    dit_augment: bool = False  # flips, colour and zoom jitter in those clips (False: one clip per face and motion)
    dit_dim: int = 256  # ComfyUI reads num_heads = dim // 128
    dit_layers: int = 4
    dit_steps: int = 5000
    dit_batch: int = 8
    dit_lr: float = 5e-4
    dit_image_steps: int = 4000  # image-first: steps on one latent frame (the clips' first) before the clip steps
    dit_ema: float = 0.995  # EMA decay of the saved weights (0: the raw weights)
    # A continuation: a further cosine cycle of clip steps at its own peak rate, starting from the saved model (EMA
    # weights) of the same recipe without it (``prefix()``, built first), with a fresh optimiser and generator.
    dit_more_steps: int = 0
    dit_more_lr: float = 2.5e-4
    dit_more_rounds: int = 1  # continuations in a row, each from the model the one before saved
    shift: float = 2.0  # flow shift of the sigmas, in training and in every sampling graph (ModelSamplingSD3)
    timesteps: str = "uniform"  # training sigmas: "uniform" or "logit_normal" (SD3), then shifted
    loss: str = "velocity"  # "velocity" or "x0" (the error of the implied clean latent; train.flow_loss)
    cfg_dropout: float = 0.1  # share of steps trained on the empty prompt (classifier-free guidance)
    eval_clips: int = 4  # sampled clips per motion prompt for the build's numbers
    eval_steps: int = 20
    eval_cfg: float = 3.0

    def digest(self) -> str:
        fields = dataclasses.asdict(self)
        if not self.vae_polish_steps:  # no polish: the hash from before its fields existed
            fields = {k: v for k, v in fields.items() if not k.startswith("vae_polish")}
        if self.dit_more_rounds == 1:  # one round or none: the hash from before the field existed
            del fields["dit_more_rounds"]
        if not self.dit_more_steps:  # no continuation: the hash of the recipe from before those fields existed
            fields = {k: v for k, v in fields.items() if not k.startswith("dit_more")}
        return _hash(fields)

    def prefix(self) -> Recipe:
        """The recipe whose saved model this one starts from: without its polish, else one continuation round
        fewer (itself when it has neither). Evaluation settings change no weights, so a prefix has the default
        ones: a recipe that only evaluates more clips reuses the cached builds before it."""
        if self.vae_polish_steps:  # the polish comes last: its prefix is the same recipe without it
            before = dataclasses.replace(self, **{k: getattr(Recipe, k) for k in _POLISH_FIELDS})
        elif self.dit_more_steps and self.dit_more_rounds > 1:
            before = dataclasses.replace(self, dit_more_rounds=self.dit_more_rounds - 1)
        elif self.dit_more_steps:
            before = dataclasses.replace(self, dit_more_steps=0, dit_more_lr=Recipe.dit_more_lr, dit_more_rounds=1)
        else:
            return self
        return dataclasses.replace(before, **{k: getattr(Recipe, k) for k in _EVAL_FIELDS})

    def polish_digest(self) -> str:
        """Hash of what the polished VAE depends on (the norm stage's fields and the polish's)."""
        return _hash({"norm": self.norm_digest(), **{k: getattr(self, k) for k in _POLISH_FIELDS}})

    def vae_digest(self) -> str:
        """Hash of what the VAE stage depends on: a rebuild that changes only the diffusion model keeps its VAE."""
        return _hash({k: v for k, v in dataclasses.asdict(self).items() if k in _VAE_FIELDS}, VAE_VERSION)

    def norm_digest(self) -> str:
        """Hash of what the folded VAE and the encoded training latents depend on."""
        return _hash({k: v for k, v in dataclasses.asdict(self).items()
                      if k in _VAE_FIELDS or k.startswith("vae_finetune") or k in ("vae_latent_noise", "clips",
                                                                                    "frames", "dit_translate",
                                                                                    "identities", "dit_augment")})


_EVAL_FIELDS = ("eval_clips", "eval_steps", "eval_cfg")
_POLISH_FIELDS = ("vae_polish_steps", "vae_polish_lr", "vae_polish_batch")
_VAE_FIELDS = ("vae_dim", "vae_steps", "vae_batch", "vae_crop", "vae_lr", "res", "seed", "motion_strength")


def _hash(fields: dict, version: int = RECIPE_VERSION) -> str:
    blob = json.dumps({"version": version, **fields}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# The shipped build (2026-12-05, hash 7e9142b6bf9413a9): the 4-identity recipe, two continuation rounds of 5000 clip
# steps, a decoder polish; evaluated on 12 clips per motion prompt (4 gave too noisy a number to decide on:
# benchmarks/proving_ground/README.md).
FULL = Recipe(dit_more_steps=5000, dit_more_rounds=2, vae_polish_steps=600, eval_clips=12)
# Seconds-to-a-minute version for the tests: same code, tiny step counts (it draws no faces).
SMOKE = Recipe(res=64, vae_steps=2, vae_batch=2, vae_crop=32, vae_finetune_steps=2, clips=4, dit_dim=128,
               dit_layers=1, dit_image_steps=2, dit_steps=3, dit_batch=2, eval_clips=1, eval_steps=4)


# What a build must reach to be committed (issue 18): faces in generated frames, that rate against the saved
# VAE's own round trip, and clips (with faces) whose face moves as prompted.
TARGET_FACE_RATE, TARGET_OF_ROUNDTRIP, TARGET_MOTION = 0.6, 0.8, 0.6

THREADS_ENV = "PERSONALVIDEO_PROVING_GROUND_THREADS"


def threads() -> int:
    return int(os.environ.get(THREADS_ENV, "1"))


def set_threads() -> int:
    """Torch CPU threads for the build and the ablation: ``$PERSONALVIDEO_PROVING_GROUND_THREADS``, default 1. On a
    shared machine two OpenMP threads wait on each other (measured under load 12 on 2 cores: a VAE step took 3.5 s
    with 2 threads, 2.0 s with 1); on an idle machine set it to the core count."""
    import torch

    torch.set_num_threads(threads())
    return threads()


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or REPO / ".cache" / "proving_ground")


def vae_stage_dir(recipe: Recipe) -> Path:
    return cache_root() / "vae_stage" / recipe.vae_digest()


def norm_stage_dir(recipe: Recipe) -> Path:
    return cache_root() / "norm_stage" / recipe.norm_digest()


def build_dir(recipe: Recipe) -> Path:
    return cache_root() / recipe.digest()


COMMITTED = REPO / "dev" / "proving_ground" / "model"  # the build of FULL shipped with the repository


def cached(recipe: Recipe = FULL) -> Path | None:
    """The build folder of ``recipe`` when it is complete (manifest written last, with the same hash)."""
    return complete(build_dir(recipe), recipe)


def committed(recipe: Recipe = FULL) -> Path | None:
    """The repository's model folder when it holds a build of ``recipe`` (same hash), else None."""
    return complete(COMMITTED, recipe)


def model_folder(recipe: Recipe = FULL) -> Path | None:
    """Where the model of ``recipe`` is: the committed folder, else a complete cached build, else None."""
    return committed(recipe) or cached(recipe)


def complete(folder: Path, recipe: Recipe) -> Path | None:
    """``folder`` when it holds both weight files and a manifest of ``recipe``'s hash."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("recipe_hash") != recipe.digest():
        return None
    if not all((folder / f).is_file() for f in (MODEL_FILE, VAE_FILE)):
        return None
    return folder


def read_manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def write_manifest(folder: Path, recipe: Recipe, **extra) -> Path:
    """Atomic: the manifest appears only complete, and only after the weights."""
    data = {"recipe_hash": recipe.digest(), "recipe": dataclasses.asdict(recipe), "recipe_version": RECIPE_VERSION,
            **extra}
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, folder / MANIFEST)
    return folder / MANIFEST
