"""The build's stages on disk, so an interrupted or changed build redoes only what it must.

- VAE stage, ``<cache>/vae_stage/<vae digest>/``: the trained VAE (the slow part); reused by every recipe with the
  same VAE fields, and by ``vae_check.py --save``.
- Norm stage, ``<cache>/norm_stage/<norm digest>/``: the training clips encoded by that VAE, their latent
  statistics, the VAE with those statistics folded in and its decoder fine-tuned (latent_norm.py), and the
  normalised latents the diffusion model trains on.
- Diffusion checkpoint, ``<build folder>/dit_checkpoint.safetensors``: the whole training state every few hundred
  steps (weights, EMA, optimiser, random generator, losses so far); a build started again resumes from it.

Every file is written atomically and each stage's marker last, so a crash never leaves a stage that looks complete.
Safetensors only (no pickles): the optimiser's hyper-parameters travel as JSON in the file's metadata.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from dev.proving_ground import recipe as recipes
from dev.proving_ground.recipe import DIT_CHECKPOINT, LATENTS_FILE, NORM_STAGE, VAE_FILE, VAE_STAGE, Recipe


def save(state: dict, path: Path, dtype: torch.dtype | None = torch.float32, metadata: dict | None = None) -> None:
    """Atomic safetensors write; floating tensors in ``dtype`` (None: as they are)."""
    from safetensors.torch import save_file

    def cast(v: torch.Tensor) -> torch.Tensor:
        v = v.detach()
        return (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: cast(v) for k, v in state.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def write_marker(path: Path, data: dict) -> None:
    """A stage's JSON marker, written atomically (after the stage's files)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def read_marker(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def vae_from_state(recipe: Recipe, state: dict):
    from dev.proving_ground import train

    vae = train.build_vae(recipe, torch.Generator().manual_seed(recipe.seed))
    vae.load_state_dict({k: v.float() for k, v in state.items()})
    return vae.eval()


def save_vae_stage(recipe: Recipe, vae, seconds: float) -> Path:
    folder = recipes.vae_stage_dir(recipe)
    folder.mkdir(parents=True, exist_ok=True)
    save(vae.state_dict(), folder / VAE_FILE)
    write_marker(folder / VAE_STAGE, {"vae_digest": recipe.vae_digest(), "vae_s": round(seconds, 1)})
    return folder


def load_vae_stage(recipe: Recipe):
    """(VAE, seconds it trained) that a build (or vae_check) of the same VAE recipe saved, or None."""
    folder = recipes.vae_stage_dir(recipe)
    stage = read_marker(folder / VAE_STAGE)
    if stage is None or stage.get("vae_digest") != recipe.vae_digest() or not (folder / VAE_FILE).is_file():
        return None
    return vae_from_state(recipe, load(folder / VAE_FILE)), stage["vae_s"]


def make_norm_stage(recipe: Recipe, vae, faces, progress=None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Encode the training clips with the trained VAE, measure their latent statistics, fold them into the VAE
    (checking that its round trip did not change), fine-tune its decoder and save the stage. ``vae`` is folded in
    place. Returns (normalised latents, motions, stats)."""
    from dev.proving_ground import latent_norm, train
    from dev.proving_ground.clips import random_clip

    t = time.perf_counter()
    raw, motions = train.encode_clips(recipe, vae, faces, progress)
    encode_s = time.perf_counter() - t
    mean, std = latent_norm.channel_stats(raw)
    gen = torch.Generator().manual_seed(recipe.seed + 4)
    probe = train._to_video([random_clip(faces, gen, recipe.res, recipe.frames,
                                         strength=recipe.motion_strength)[0] for _ in range(2)])
    fmt = latent_norm._format()
    with torch.no_grad():
        before = vae.decode(vae.encode(probe))
        expected = latent_norm.normalise(fmt.process_in(vae.encode(probe)), mean, std)
        latent_norm.fold(vae, mean, std)
        folded_latent = fmt.process_in(vae.encode(probe))
        after = vae.decode(vae.encode(probe))
    latents = latent_norm.normalise(raw, mean, std)
    new_mean, new_std = latent_norm.channel_stats(latents)
    t = time.perf_counter()
    latent_norm.finetune_decoder(recipe, vae, faces, progress)
    stats = {
        "before": {"mean": _r(mean), "std": _r(std), "first_loss": round(latent_norm.first_loss(raw), 4)},
        "after": {"mean": _r(new_mean), "std": _r(new_std), "first_loss": round(latent_norm.first_loss(latents), 4)},
        "fold_roundtrip_max_abs": float((after - before).abs().max()),  # decoded pixels in [-1, 1]
        "fold_latent_max_abs": float((folded_latent - expected).abs().max()),
        "encode_s": round(encode_s, 1), "vae_finetune_s": round(time.perf_counter() - t, 1),
    }
    folder = recipes.norm_stage_dir(recipe)
    folder.mkdir(parents=True, exist_ok=True)
    save(vae.state_dict(), folder / VAE_FILE)
    save({"latents": latents, "motions": motions}, folder / LATENTS_FILE, dtype=None)
    write_marker(folder / NORM_STAGE, {"norm_digest": recipe.norm_digest(), **stats})
    return latents, motions, stats


def _r(values: torch.Tensor) -> list[float]:
    return [round(float(v), 4) for v in values]


def load_norm_stage(recipe: Recipe) -> tuple[torch.Tensor, torch.Tensor, dict] | None:
    folder = recipes.norm_stage_dir(recipe)
    stats = read_marker(folder / NORM_STAGE)
    if stats is None or stats.get("norm_digest") != recipe.norm_digest():
        return None
    data = load(folder / LATENTS_FILE)
    return data["latents"], data["motions"], stats


def load_norm_vae(recipe: Recipe):
    """The folded, fine-tuned VAE of the recipe's norm stage."""
    return vae_from_state(recipe, load(recipes.norm_stage_dir(recipe) / VAE_FILE))


def save_dit_checkpoint(folder: Path, state: dict, losses: list[float], seconds: float) -> None:
    tensors = {**{f"dit.{k}": v for k, v in state["dit"].items()}, **{f"ema.{k}": v for k, v in state["ema"].items()},
               "gen": state["gen"], "losses": torch.tensor(losses, dtype=torch.float64)}
    for index, values in state["opt"]["state"].items():
        tensors.update({f"opt.{index}.{k}": v for k, v in values.items()})
    meta = {"step": str(state["step"]), "dit_s": str(seconds),
            "param_groups": json.dumps(state["opt"]["param_groups"])}
    save(tensors, folder / DIT_CHECKPOINT, dtype=None, metadata=meta)


def load_dit_checkpoint(folder: Path) -> dict | None:
    """The state ``save_dit_checkpoint`` left in ``folder``, as ``train.train_dit(resume=)`` takes it, or None."""
    from safetensors import safe_open

    path = folder / DIT_CHECKPOINT
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load(path)
    opt_state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, index, name = key.split(".", 2)
            opt_state.setdefault(int(index), {})[name] = value
    return {"step": int(meta["step"]), "dit_s": float(meta["dit_s"]),
            "dit": {k[4:]: v for k, v in tensors.items() if k.startswith("dit.")},
            "ema": {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")},
            "opt": {"state": opt_state, "param_groups": json.loads(meta["param_groups"])},
            "gen": tensors["gen"], "losses": tensors["losses"].tolist()}
