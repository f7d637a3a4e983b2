"""Build the proving-ground model: a tiny Wan 2.1 (ComfyUI's classes) trained here, from scratch, on face clips.

    .venv/bin/python -m dev.proving_ground.build_model            # full recipe (cached; see benchmarks/proving_ground)
    .venv/bin/python -m dev.proving_ground.build_model --smoke    # seconds: same code, tiny step counts

Data: real face photos from PyPI packages (dev/proving_ground/faces.py; Obama held out), cut into 9-frame
clips (128x128 in the full recipe) that pan left/right or zoom in/out, prompted "a person moves left" etc.
through the dev text stand-in.
Steps: train the VAE, encode the clips, train the diffusion model (dev/proving_ground/train.py), save both as
ComfyUI loads them, then sample clips per prompt in real ComfyUI and measure the face detection rate (real SCRFD,
threshold 0.5) and whether the face moved as prompted. Results: ``<cache>/<recipe hash>/`` with the weights,
``samples.png`` and ``manifest.json`` (recipe, hash, timings, numbers). A complete build with the same recipe
hash is reused; ``--force`` rebuilds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from dev.proving_ground import recipe as recipes
from dev.proving_ground.clips import MOTIONS, cached_canvas, prompt_for
from dev.proving_ground.faces import PRETRAIN_PHOTOS, detector, find_faces
from dev.proving_ground.recipe import MODEL_FILE, VAE_FILE, VAE_STAGE, Recipe


def _say(message: str) -> None:
    print(message, flush=True)


def _save(state: dict, path: Path) -> None:
    """Atomic safetensors write (a crash leaves no half file under the final name)."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().float().contiguous() for k, v in state.items()}, str(tmp))
    os.replace(tmp, path)


def estimate_seconds(recipe: Recipe, faces, vae_cached: bool = False) -> float:
    """Time one VAE step of each kind, one encode batch and one diffusion step on throwaway models; scale up
    (without the VAE's steps when its stage is cached)."""
    from dev.proving_ground import train

    probe = Recipe(**{**recipe.__dict__, "vae_steps": 2, "dit_steps": 2, "clips": 8, "seed": recipe.seed + 99})
    for face in faces:  # cut once per build, not per step: keep it out of the per-step timing
        cached_canvas(face, recipe.res)
    t0 = time.perf_counter()
    vae = train.train_vae(probe, faces)
    t1 = time.perf_counter()
    latents, motions = train.encode_clips(probe, vae, faces)
    t2 = time.perf_counter()
    train.train_dit(probe, latents.repeat(recipe.dit_batch, 1, 1, 1, 1), motions.repeat(recipe.dit_batch))
    t3 = time.perf_counter()
    eval_clips = recipe.eval_clips * len(MOTIONS)
    vae_s = 0 if vae_cached else (t1 - t0) / 2 * recipe.vae_steps
    return (vae_s + (t2 - t1) * recipe.clips / 8 + (t3 - t2) / 2 * recipe.dit_steps
            + eval_clips * recipe.eval_steps * 0.05 + 10)


def _progress_bars(recipe: Recipe):
    from tqdm import tqdm

    totals = {"vae": recipe.vae_steps, "encode": -(-recipe.clips // 8), "dit": recipe.dit_steps}
    bars = {}

    def progress(phase: str, step: int, loss: float) -> None:
        if phase not in bars:
            for bar in bars.values():
                bar.close()
            bars[phase] = tqdm(total=totals[phase], desc=phase, file=sys.stderr, mininterval=5, ascii=True)
        bars[phase].update(1)
        if phase != "encode" and step % 20 == 0:
            bars[phase].set_postfix(loss=f"{loss:.4f}", refresh=False)
        if step + 1 == totals[phase]:
            bars[phase].close()

    return progress


def train_and_save(recipe: Recipe, folder: Path, say=_say) -> dict:
    from dev.proving_ground import train

    torch.manual_seed(recipe.seed)
    faces = find_faces(PRETRAIN_PHOTOS)
    say(f"{len(faces)} faces from {len({f.source for f in faces})} photos (Obama held out)")
    stage = load_vae_stage(recipe)
    estimate = estimate_seconds(recipe, faces, vae_cached=stage is not None)
    say(f"estimated build time: {estimate / 60:.1f} min on this machine now "
        f"({os.cpu_count()} cores; longer while other jobs run)")
    progress = _progress_bars(recipe)
    timings = {}
    if stage is None:
        t = time.perf_counter()
        vae = train.train_vae(recipe, faces, progress)
        timings["vae_s"] = time.perf_counter() - t
        save_vae_stage(recipe, vae, timings["vae_s"])
    else:
        vae, timings["vae_s"] = stage
        say(f"VAE reused from {recipes.vae_stage_dir(recipe)} (same VAE recipe; it trained in "
            f"{timings['vae_s'] / 60:.1f} min)")
    t = time.perf_counter()
    latents, motions = train.encode_clips(recipe, vae, faces, progress)
    timings["encode_s"] = time.perf_counter() - t
    t = time.perf_counter()
    dit = train.train_dit(recipe, latents, motions, progress)
    timings["dit_s"] = time.perf_counter() - t
    folder.mkdir(parents=True, exist_ok=True)
    _save(dit.state_dict(), folder / MODEL_FILE)
    shutil.copyfile(recipes.vae_stage_dir(recipe) / VAE_FILE, folder / VAE_FILE)
    return {"faces": len(faces), "estimate_s": round(estimate, 1), **{k: round(v, 1) for k, v in timings.items()}}


def save_vae_stage(recipe: Recipe, vae, seconds: float) -> Path:
    """The trained VAE under ``<cache>/vae_stage/<vae digest>/`` (its marker written last): builds whose recipes
    differ only in the diffusion model reuse it, as does a build after ``vae_check.py --save`` of the same recipe."""
    folder = recipes.vae_stage_dir(recipe)
    folder.mkdir(parents=True, exist_ok=True)
    _save(vae.state_dict(), folder / VAE_FILE)
    tmp = folder / (VAE_STAGE + ".tmp")
    tmp.write_text(json.dumps({"vae_digest": recipe.vae_digest(), "vae_s": round(seconds, 1)}))
    os.replace(tmp, folder / VAE_STAGE)
    return folder


def load_vae_stage(recipe: Recipe):
    """(VAE, seconds it trained) that a build (or vae_check) of the same VAE recipe saved, or None."""
    from safetensors.torch import load_file

    from dev.proving_ground import train

    folder = recipes.vae_stage_dir(recipe)
    try:
        stage = json.loads((folder / VAE_STAGE).read_text())
    except (OSError, ValueError):
        return None
    if stage.get("vae_digest") != recipe.vae_digest() or not (folder / VAE_FILE).is_file():
        return None
    vae = train.build_vae(recipe, torch.Generator().manual_seed(recipe.seed))
    vae.load_state_dict(load_file(str(folder / VAE_FILE)))
    return vae.eval(), stage["vae_s"]


def evaluate(rt, folder: Path, recipe: Recipe) -> dict:
    """Sample ``eval_clips`` clips per motion prompt in ComfyUI; face detection rate and motion adherence."""
    from dev.proving_ground import sampling
    from dev.proving_ground.motion import measure

    sampling.register(folder)
    det = detector()
    g = sampling.Graph()
    model, vae = sampling.loaders(g)
    keys = []
    for motion in MOTIONS:
        for i in range(recipe.eval_clips):
            key = f"pg_eval_{motion}_{i}"
            sampling.capture(g, sampling.sample(g, model, vae, recipe, prompt_for(motion), seed=1000 + i), key)
            keys.append((motion, key))
    rt.run(g.nodes)
    clips, per_clip = [], []
    for motion, key in keys:
        frames = rt.captured()[key].float()
        clips.append(frames)
        m = measure(frames, det)
        per_clip.append({"motion": motion, "face_rate": m.face_rate, "dx": m.dx, "log_scale": m.log_scale,
                         "follows": m.follows(motion)})
    _save_strip(clips, folder / "samples.png")
    n = len(per_clip)
    return {"face_detection_rate": sum(c["face_rate"] for c in per_clip) / n,
            "motion_follows_prompt": sum(c["follows"] for c in per_clip) / n, "eval_clips": per_clip}


def _save_strip(clips: list[torch.Tensor], path: Path) -> None:
    """One row per sampled clip, frames left to right."""
    from PIL import Image

    rows = torch.cat([torch.cat(list(c.clamp(0, 1)), dim=1) for c in clips], dim=0)
    Image.fromarray((rows * 255).round().byte().numpy()).save(path)


def build(rt, recipe: Recipe = recipes.FULL, force: bool = False, say=_say) -> Path:
    """The build folder of ``recipe``, trained and evaluated now unless a complete one is cached."""
    folder = recipes.build_dir(recipe)
    if not force and recipes.cached(recipe) is not None:
        say(f"proving-ground model cached in {folder}")
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    started = time.perf_counter()
    info = train_and_save(recipe, folder, say)
    t = time.perf_counter()
    numbers = evaluate(rt, folder, recipe)
    info["evaluate_s"] = round(time.perf_counter() - t, 1)
    info["total_s"] = round(time.perf_counter() - started, 1)
    recipes.write_manifest(folder, recipe, **info, **numbers)
    say(f"built in {info['total_s'] / 60:.1f} min: faces detected in {numbers['face_detection_rate']:.0%} of "
        f"sampled frames, motion follows the prompt in {numbers['motion_follows_prompt']:.0%} of clips -> {folder}")
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="the seconds-long recipe (tests; draws no faces)")
    parser.add_argument("--force", action="store_true", help="rebuild even when a complete build is cached")
    args = parser.parse_args()
    from dev.comfy_runtime import ComfyRuntime

    recipes.set_threads()
    rt = ComfyRuntime.boot(recipes.cache_root() / "comfy")
    folder = build(rt, recipes.SMOKE if args.smoke else recipes.FULL, force=args.force)
    manifest = recipes.read_manifest(folder)
    print(json.dumps({k: v for k, v in manifest.items() if k != "eval_clips"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
