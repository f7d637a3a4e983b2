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
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from dev.proving_ground import recipe as recipes
from dev.proving_ground import stages
from dev.proving_ground.clips import MOTIONS, cached_canvas, prompt_for
from dev.proving_ground.decoder_polish import polish_prefix_build
from dev.proving_ground.faces import PRETRAIN_PHOTOS, detector, find_faces
from dev.proving_ground.recipe import DIT_CHECKPOINT, MODEL_FILE, VAE_FILE, Recipe
from dev.proving_ground.release import commit, file_digests, meets_target


def _say(message: str) -> None:
    print(message, flush=True)


def estimate_seconds(recipe: Recipe, faces, vae_cached: bool = False) -> float:
    """Time one VAE step of each kind, one encode batch and one diffusion step on throwaway models; scale up
    (without the VAE's steps when its stage is cached)."""
    from dev.proving_ground import train

    from dev.proving_ground.latent_norm import finetune_decoder

    probe = Recipe(**{**recipe.__dict__, "vae_steps": 2, "vae_finetune_steps": 2, "dit_image_steps": 2,
                      "dit_steps": 0, "dit_more_steps": 0, "clips": 8, "seed": recipe.seed + 99})
    for face in faces:  # cut once per build, not per step: keep it out of the per-step timing
        cached_canvas(face, recipe.res)
    t0 = time.perf_counter()
    vae = train.train_vae(probe, faces)
    t1 = time.perf_counter()
    latents, motions = train.encode_clips(probe, vae, faces)
    t2 = time.perf_counter()
    finetune_decoder(probe, vae, faces)
    t3 = time.perf_counter()
    latents, motions = latents.repeat(recipe.dit_batch, 1, 1, 1, 1), motions.repeat(recipe.dit_batch)
    train.train_dit(probe, latents, motions)
    t4 = time.perf_counter()
    train.train_dit(Recipe(**{**probe.__dict__, "dit_image_steps": 0, "dit_steps": 2}), latents, motions)
    t5 = time.perf_counter()
    eval_clips = recipe.eval_clips * len(MOTIONS)
    vae_s = 0 if vae_cached else (t1 - t0) / 2 * recipe.vae_steps
    return (vae_s + (t2 - t1) * recipe.clips / 8 + (t3 - t2) / 2 * recipe.vae_finetune_steps
            + (t4 - t3) / 2 * recipe.dit_image_steps * (not recipe.dit_more_steps)
            + (t5 - t4) / 2 * (recipe.dit_more_steps or recipe.dit_steps)
            + eval_clips * recipe.eval_steps * 0.05 + 10)


def _progress_bars(recipe: Recipe):
    from tqdm import tqdm

    totals = {"vae": recipe.vae_steps, "encode": -(-recipe.clips // 8), "vae_finetune": recipe.vae_finetune_steps,
              "vae_polish": recipe.vae_polish_steps,
              "dit": recipe.dit_more_steps or recipe.dit_image_steps + recipe.dit_steps}
    # a continuation's steps are numbered after its prefix's
    first = {"dit": recipe.dit_image_steps + recipe.dit_steps if recipe.dit_more_steps else 0}
    losses: list[float] = []  # the diffusion stage's losses, in order (for the manifest's curve)
    bars = {}

    def progress(phase: str, step: int, loss: float) -> None:
        if phase == "dit":
            losses.append(loss)
        done = step - first.get(phase, 0)
        if phase not in bars:
            for bar in bars.values():
                bar.close()
            bars[phase] = tqdm(total=totals[phase], initial=done, desc=phase, file=sys.stderr, mininterval=5,
                               ascii=True)  # a resumed stage's bar starts where the stage is
        bars[phase].update(1)
        if phase != "encode" and step % 20 == 0:
            bars[phase].set_postfix(loss=f"{loss:.4f}", refresh=False)
        if done + 1 == totals[phase]:
            bars[phase].close()

    progress.losses = losses
    return progress


def train_and_save(recipe: Recipe, folder: Path, say=_say) -> dict:
    from dev.proving_ground import train

    torch.manual_seed(recipe.seed)
    faces = find_faces(PRETRAIN_PHOTOS)
    say(f"{len(faces)} faces from {len({f.source for f in faces})} photos (Obama held out)")
    stage = stages.load_vae_stage(recipe)
    estimate = estimate_seconds(recipe, faces, vae_cached=stage is not None)
    say(f"estimated build time: {estimate / 60:.1f} min on this machine now "
        f"({os.cpu_count()} cores; longer while other jobs run)")
    progress = _progress_bars(recipe)
    timings = {}
    if stage is None:
        t = time.perf_counter()
        vae = train.train_vae(recipe, faces, progress)
        timings["vae_s"] = time.perf_counter() - t
        stages.save_vae_stage(recipe, vae, timings["vae_s"])
    else:
        vae, timings["vae_s"] = stage
        say(f"VAE reused from {recipes.vae_stage_dir(recipe)} (same VAE recipe; it trained in "
            f"{timings['vae_s'] / 60:.1f} min)")
    norm = stages.load_norm_stage(recipe)
    if norm is None:
        norm = stages.make_norm_stage(recipe, vae, faces, progress)
    else:
        say(f"folded VAE and training latents reused from {recipes.norm_stage_dir(recipe)}")
    latents, motions, stats = norm
    timings.update(encode_s=stats["encode_s"], vae_finetune_s=stats["vae_finetune_s"])
    resume = stages.load_dit_checkpoint(folder)
    if resume is not None:
        say(f"diffusion stage resumed at step {resume['step']} from {folder / DIT_CHECKPOINT}")
    if resume is not None:
        progress.losses[:] = resume["losses"]
    t, before = time.perf_counter(), resume["dit_s"] if resume else 0.0

    def checkpoint(state: dict) -> None:
        stages.save_dit_checkpoint(folder, state, progress.losses, before + time.perf_counter() - t)

    init, before_prefix = None, 0.0
    if recipe.dit_more_steps:  # a continuation starts from its prefix build's saved model (built first by build())
        prefix = recipes.cached(recipe.prefix())
        init = {k: v.float() for k, v in stages.load(prefix / MODEL_FILE).items()}
        before_prefix = recipes.read_manifest(prefix)["dit_s"]
        say(f"diffusion stage continues the model of recipe {recipe.prefix().digest()} ({prefix})")
    dit = train.train_dit(recipe, latents, motions, progress, resume=resume, checkpoint=checkpoint,
                          every=DIT_CHECKPOINT_EVERY, init=init)
    timings["dit_s"] = before_prefix + before + time.perf_counter() - t
    stages.save(dit.state_dict(), folder / MODEL_FILE, torch.float16)
    stages.save(stages.load(recipes.norm_stage_dir(recipe) / VAE_FILE), folder / VAE_FILE, torch.float16)
    info = {"latents": {k: stats[k] for k in ("before", "after", "fold_roundtrip_max_abs", "fold_latent_max_abs")},
            "dit_loss_by_tenth": _tenths(progress.losses)}
    return {"faces": len(faces), "estimate_s": round(estimate, 1), **{k: round(v, 1) for k, v in timings.items()},
            **info}


DIT_CHECKPOINT_EVERY = 250  # steps between the diffusion stage's checkpoints (about 2-4 min on one thread)


def _tenths(losses: list[float]) -> list[float]:
    """Mean loss over each tenth of the steps."""
    n = len(losses)
    parts = [losses[i * n // 10:(i + 1) * n // 10] for i in range(10)] if n >= 10 else [[x] for x in losses]
    return [round(sum(p) / len(p), 4) for p in parts]


def evaluate(rt, folder: Path, recipe: Recipe) -> dict:
    """Sample ``eval_clips`` clips per motion prompt in ComfyUI (single frames when the recipe trains no clip
    steps); face detection rate and motion adherence; and the face rate of the saved VAE's own round trip."""
    from dev.proving_ground import sampling
    from dev.proving_ground.motion import measure
    from dev.proving_ground.vae_check import reconstruction_check

    sampling.register(folder)
    det = detector()
    g = sampling.Graph()
    model, vae = sampling.loaders(g, recipe)
    frames = recipe.frames if recipe.dit_steps else 1
    keys = []
    for motion in MOTIONS:
        for i in range(recipe.eval_clips):
            key = f"pg_eval_{motion}_{i}"
            clip = sampling.sample(g, model, vae, recipe, prompt_for(motion), seed=1000 + i, frames=frames)
            sampling.capture(g, clip, key)
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
    with_faces = [c for c in per_clip if not math.isnan(c["dx"])]  # clips where the motion is measurable
    saved_vae = stages.vae_from_state(recipe, stages.load(folder / VAE_FILE))
    roundtrip = reconstruction_check(saved_vae, recipe, find_faces(PRETRAIN_PHOTOS, det), det,
                                    2 * recipe.eval_clips)
    return {"face_detection_rate": sum(c["face_rate"] for c in per_clip) / n,
            "motion_follows_prompt": sum(c["follows"] for c in per_clip) / n,
            "motion_follows_with_faces": sum(c["follows"] for c in with_faces) / max(len(with_faces), 1),
            "clips_with_faces": len(with_faces), "vae_roundtrip": roundtrip,
            "eval_clips": per_clip}


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
    if force and folder.exists():
        shutil.rmtree(folder)
    if recipe.prefix() != recipe:  # a continuation or a polish starts from its prefix's build (cached once built)
        build(rt, recipe.prefix(), say=say)
    folder.mkdir(parents=True, exist_ok=True)  # an interrupted build resumes from the stages it left
    started = time.perf_counter()
    if recipe.vae_polish_steps:
        info = polish_prefix_build(recipe, folder, _progress_bars(recipe), say)
    else:
        info = train_and_save(recipe, folder, say)
    t = time.perf_counter()
    numbers = evaluate(rt, folder, recipe)
    info["evaluate_s"] = round(time.perf_counter() - t, 1)
    info["this_run_s"] = round(time.perf_counter() - started, 1)  # less than total_s when stages were reused
    info["total_s"] = round(sum(info.get(k, 0) for k in ("vae_s", "encode_s", "vae_finetune_s", "dit_s", "vae_polish_s",
                                                         "evaluate_s")), 1)
    machine = (f"{os.cpu_count()} CPU cores, {recipes.threads()} torch thread(s), torch {torch.__version__}, "
               f"finished {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    recipes.write_manifest(folder, recipe, **info, **numbers, files=file_digests(folder),
                           meets_target=meets_target(numbers), machine=machine)
    (folder / DIT_CHECKPOINT).unlink(missing_ok=True)  # complete: the stage's state is spent
    say(f"built in {info['total_s'] / 60:.1f} min: faces detected in {numbers['face_detection_rate']:.0%} of "
        f"sampled frames, motion follows the prompt in {numbers['motion_follows_prompt']:.0%} of clips -> {folder}")
    return folder


def with_overrides(recipe: Recipe, settings: list[str]) -> Recipe:
    """``recipe`` with ``FIELD=VALUE`` settings applied (values parsed as the field's type)."""
    fields = {f.name: f.type for f in dataclasses.fields(Recipe)}
    changes = {}
    for setting in settings:
        name, sep, value = setting.partition("=")
        if not sep or name not in fields:
            raise SystemExit(f"--set: got {setting!r}; expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
        kind = {"int": int, "float": float, "str": str, "bool": lambda v: v.lower() in ("1", "true", "yes")}[
            fields[name]]
        changes[name] = kind(value)
    return dataclasses.replace(recipe, **changes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="the seconds-long recipe (tests; draws no faces)")
    parser.add_argument("--force", action="store_true", help="rebuild even when a complete build is cached")
    parser.add_argument("--commit", action="store_true",
                        help="copy the complete build into dev/proving_ground/model/ (only if it meets the target)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="experiment: override a recipe field (e.g. --set shift=3); the build has its own hash")
    args = parser.parse_args()
    from dev.comfy_runtime import ComfyRuntime

    recipe = with_overrides(recipes.SMOKE if args.smoke else recipes.FULL, args.set)
    if args.commit:
        commit(recipe)
        return 0
    recipes.set_threads()
    rt = ComfyRuntime.boot(recipes.cache_root() / "comfy")
    folder = build(rt, recipe, force=args.force)
    manifest = recipes.read_manifest(folder)
    print(json.dumps({k: v for k, v in manifest.items() if k != "eval_clips"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
