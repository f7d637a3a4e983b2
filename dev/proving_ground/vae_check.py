"""The proving ground's VAE alone: train it with a recipe variant, then measure whether its reconstructions keep faces.

Trains the VAE exactly as the build does (``train.train_vae``; frame size, width, steps, crop and learning rate
from the command line), then encodes and decodes held-aside clips (drawn from the same pre-training faces with a
generator the training never uses) and reports the mean L1 error (0-1 scale) and the share of frames in which the
real SCRFD (scrfd_500m, threshold 0.5) finds a face, in the source clips and in the reconstructions. No diffusion
model is involved: a diffusion model cannot draw a face its decoder cannot reconstruct, so this is the first gate.

    .venv/bin/python -m dev.proving_ground.vae_check --res 128 --dim 8 --steps 600 --crop 64

Prints one JSON line with the numbers (and appends it to ``--out`` when given).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from dev.proving_ground import recipe as recipes

HELD_ASIDE_SEED = 777_001  # no training generator uses it


def _comfy_importable() -> None:
    """ComfyUI's modules importable, its arguments parsed for this device (``--cpu`` unless told otherwise)."""
    from dev.comfy_runtime import import_comfyui

    import_comfyui()


@torch.no_grad()
def reconstruction_check(vae, recipe: recipes.Recipe, faces, det, clips: int) -> dict:
    """Encode + decode ``clips`` held-aside clips: mean L1, the share of frames with a face SCRFD finds in the
    sources and in the reconstructions, and ``faces_kept``: of the source frames with a face, the share whose
    reconstruction still has one (some faces SCRFD finds in the photo are lost in some clips already)."""
    from dev.proving_ground.clips import MOTIONS, random_clip
    from dev.proving_ground.train import _to_video

    gen = torch.Generator().manual_seed(HELD_ASIDE_SEED)
    l1, found_src, found_rec, kept, frames = 0.0, 0, 0, 0, 0
    kept_at = [0] * recipe.frames  # per frame position: frames whose face survived (0 is encoded alone)
    for i in range(clips):
        clip = random_clip(faces, gen, recipe.res, recipe.frames, motion=MOTIONS[i % len(MOTIONS)],
                           strength=recipe.motion_strength)[0]
        rec = ((vae.decode(vae.encode(_to_video([clip]))) + 1) / 2).clamp(0, 1)[0].permute(1, 2, 3, 0)
        l1 += float((rec - clip).abs().mean())
        for pos, (src_frame, rec_frame) in enumerate(zip(clip, rec)):
            in_src = bool(det.detect((src_frame * 255).round().byte().numpy(), 0.5))
            in_rec = bool(det.detect((rec_frame * 255).round().byte().numpy(), 0.5))
            found_src, found_rec, frames = found_src + in_src, found_rec + in_rec, frames + 1
            kept += in_src and in_rec
            kept_at[pos] += in_src and in_rec
    return {"recon_l1": round(l1 / clips, 4), "faces_source": round(found_src / frames, 3),
            "faces_recon": round(found_rec / frames, 3), "faces_kept": round(kept / max(found_src, 1), 3),
            "frames": frames, "kept_by_position": kept_at}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--res", type=int, default=recipes.FULL.res, help="frame side in pixels (multiple of 8)")
    parser.add_argument("--dim", type=int, default=recipes.FULL.vae_dim, help="WanVAE base width")
    parser.add_argument("--steps", type=int, default=recipes.FULL.vae_steps, help="VAE training steps")
    parser.add_argument("--crop", type=int, default=recipes.FULL.vae_crop, help="training crop side (pixels)")
    parser.add_argument("--lr", type=float, default=recipes.FULL.vae_lr, help="peak learning rate")
    parser.add_argument("--batch", type=int, default=recipes.FULL.vae_batch, help="single frames per step")
    parser.add_argument("--edge", type=float, default=0.0, help="weight of an edge (gradient) L1 loss term")
    parser.add_argument("--clips", type=int, default=8, help="held-aside clips reconstructed for the numbers")
    parser.add_argument("--motion", type=float, default=recipes.FULL.motion_strength,
                        help="motion strength of the clips (clips.trajectory)")
    parser.add_argument("--every", type=int, default=0, help="also measure every N steps (one JSON line each)")
    parser.add_argument("--save", action="store_true",
                        help="keep the trained VAE as the build's VAE stage (a build of the same VAE recipe reuses it)")
    parser.add_argument("--out", type=Path, help="append the JSON lines to this file")
    args = parser.parse_args()
    _comfy_importable()
    from dev.proving_ground.faces import PRETRAIN_PHOTOS, detector, find_faces
    from dev.proving_ground.train import train_vae

    threads = recipes.set_threads()
    recipe = dataclasses.replace(recipes.FULL, res=args.res, vae_dim=args.dim, vae_steps=args.steps,
                                 vae_crop=args.crop, vae_lr=args.lr, vae_batch=args.batch,
                                 motion_strength=args.motion)
    det = detector()
    faces = find_faces(PRETRAIN_PHOTOS, det)
    marks = {0, args.steps // 4, args.steps // 2, args.steps - 1}

    def progress(phase: str, step: int, loss: float) -> None:
        if step in marks:
            print(f"step {step + 1}/{args.steps} loss {loss:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)

    def report(step: int, vae) -> None:
        train_s = time.perf_counter() - start
        result = {"res": args.res, "dim": args.dim, "steps": args.steps, "at_step": step + 1, "crop": args.crop,
                  "lr": args.lr, "batch": args.batch, "edge": args.edge, "motion": args.motion,
                  "params": sum(p.numel() for p in vae.parameters()), "threads": threads, "train_s": round(train_s, 1),
                  **reconstruction_check(vae, recipe, faces, det, args.clips)}
        line = json.dumps(result)
        print(line, flush=True)
        if args.out:
            with args.out.open("a") as f:
                f.write(line + "\n")

    def inspect(step: int, vae) -> None:
        if args.every and (step + 1) % args.every == 0 and step + 1 < args.steps:
            report(step, vae)

    start = time.perf_counter()
    vae = train_vae(recipe, faces, progress, edge_weight=args.edge, inspect=inspect)
    if args.save:
        from dev.proving_ground.stages import save_vae_stage

        print(f"VAE stage saved in {save_vae_stage(recipe, vae, time.perf_counter() - start)}", flush=True)
    report(args.steps - 1, vae)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
