"""One training step: ours vs a naive reward-training baseline, time and peak memory.

    .venv/bin/python -m benchmarks.training_step.bench [--steps-list 8 20 40] [--size medium]

Ours (training/): the pre-gate trajectory once without gradient, source and tuned runs from the
gate latent, every gradient step and the transformer blocks inside it checkpointed, only the latent frames
the reward frames need decoded.
Naive: separate source and adapter rollouts from noise, gradient kept through every gated step with no
checkpointing, the whole clip decoded with gradient, then the same reward frames scored.

Each (variant, N) runs in its own process with glibc told to return freed memory to the OS
(MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_), so the resident set follows live tensors; a thread samples
it every millisecond. Peak = highest resident set during the timed step minus the resident set just before
it. Each process runs one untimed warm-up step first. Real ComfyUI 0.3.75 on the CPU; a Wan 2.1 model built
from ComfyUI's class with random weights; tiny Wan VAE; the real w600k_mbf ArcFace and SCRFD (detector
threshold 0.05 so the random model's frames yield face crops, as in tests/nodes/test_trainer_comfy.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SIZES = {
    "medium": (dict(dim=512, ffn_dim=2048, num_heads=4, num_layers=4), (128, 128, 33)),
    "tiny": ({}, (64, 64, 17)),
}


def child(variant: str, steps: int, size: str, repeats: int, frames_override: int = 0) -> dict:
    import shutil

    import torch

    from dev import tiny_models
    from dev.peak_memory import Peak
    from dev.comfy_runtime import ComfyRuntime
    from dev.face_assets import make_pack, photo_path

    rt = ComfyRuntime.boot(Path(tempfile.mkdtemp(prefix="pv_train_bench_")))
    overrides, (width, height, frames) = SIZES[size]
    frames = frames_override or frames
    tiny_models.write_diffusion_model("wan21", rt.model_dir("diffusion_models") / "m.safetensors", **overrides)
    tiny_models.write_wan_vae(rt.model_dir("vae") / "v.safetensors")
    make_pack(rt.model_dir("insightface") / "models", "vectron_s")
    shutil.copy(photo_path("obama.jpg"), rt.base_dir / "input" / "obama.jpg")

    import nodes
    from PIL import Image
    import numpy as np

    from personalvideo.nodes.runtime import autograd
    from personalvideo.nodes.runtime import backend as backend_mod
    from personalvideo.nodes.runtime import model as runtime_model
    from personalvideo.training import prompts
    from personalvideo.training.adapter import gate as gate_rule
    from personalvideo.training.identity import reference
    from personalvideo.training.identity import reward as ident
    from personalvideo.training.loop import rollout
    from personalvideo.training.loop import trainer as training

    class NaiveTrainer(training.Trainer):
        def generate(self, denoise, sample, x, sigmas, full_sigmas=None):
            gate_sigma = gate_rule.step_gate_sigma(sigmas, self.settings.gate_start)
            with torch.no_grad():
                source = sample(lambda v, sigma, **kw: denoise(v, sigma, False, **kw), x)
            # from noise again, graph kept through every gated call
            tuned = sample(lambda v, sigma, **kw: denoise(v, sigma, gate_rule.gate_is_open(sigma, gate_sigma), **kw), x)
            return rollout.Rollout(None, source, tuned, 0)

        def decode_frames(self, latent, frames):
            return self.backend.decode(latent, list(range(self.backend.num_frames)))[frames]

    with autograd.training_mode():
        model = nodes.UNETLoader().load_unet("m.safetensors", "default")[0]
        vae = nodes.VAELoader().load_vae("v.safetensors")[0]
        clip = nodes.NODE_CLASS_MAPPINGS["PersonalVideoDevCLIPStandIn"]().load(4096, 0, 16)[0]
        idm = ident.load_identity_reward_model(rt.model_dir("insightface") / "models" / "vectron_s",
                                               det_threshold=0.05)
        photo = torch.from_numpy(np.asarray(Image.open(rt.base_dir / "input" / "obama.jpg").convert("RGB"),
                                            dtype=np.float32) / 255.0)
        ref = reference.build_reference(idm, [photo], 2, 0.05, 0.1, 0)
        settings = training.TrainSettings(steps=2, learning_rate=1e-3, rank=16, alpha=16.0, sampling_steps=steps,
                                          cfg=5.0, frames_per_reward=4, seed=0)
        params, gate, patched = runtime_model.attach_trainable_adapter(
            model, runtime_model.adapter_targets(model, "attention").shapes, 16, 16.0, 0, 0.75, "cpu")
        # ours: as shipped (transformer blocks checkpointed too, decode_gradient "checkpointed");
        # ours_blocks_off: checkpoint_blocks off; ours_decode_plain / ours_decode_truncated: another
        # decode_gradient; naive: no checkpointing of any kind (and the whole clip decoded, plain)
        decode = variant[len("ours_decode_"):] if variant.startswith("ours_decode_") else \
            "plain" if variant == "naive" else "checkpointed"
        sampling = backend_mod.ComfyBackendSettings("blurry", width, height, frames, steps, 5.0, decode_gradient=decode,
                                                    checkpoint_blocks=variant not in ("ours_blocks_off", "naive"))
        backend = backend_mod.ComfyBackend(patched, gate, clip, vae, sampling)
        bank = prompts.build_prompt_bank("a man", "", "blurry")
        backend.encode_prompts(bank.prompts)  # as the trainer node does: all before the first step
        cls = NaiveTrainer if variant == "naive" else training.Trainer
        trainer = cls(backend, params, bank, settings, identity_reward=lambda f: idm.reward(f, ref.embedding))

        trainer.train_step(0)  # warm-up (one-time allocations, ONNX sessions, caches)
        seconds, peaks, skipped, last_frames = [], [], [], []
        for step in range(1, repeats + 1):  # timed steps: other prompts and noise, same settings
            with Peak() as peak:
                t0 = time.perf_counter()
                record = trainer.train_step(step)
                seconds.append(time.perf_counter() - t0)
            peaks.append(peak.rise_mb)
            skipped.append(record.skipped)
            last_frames.append(max(trainer.draw(step).frames))
    # A step whose reward frames show no face does no backward ("skipped"): not a comparable step.
    full = [t for t, why in zip(seconds, skipped) if not why] or seconds
    return {"variant": variant, "steps": steps, "seconds": statistics.median(full), "all_seconds": seconds,
            "skipped": skipped, "peak_mb": max(peaks), "frames": frames, "last_reward_frames": last_frames}


def run_child(variant: str, steps: int, size: str, repeats: int, frames: int = 0) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    out = subprocess.run([sys.executable, "-m", "benchmarks.training_step.bench", "--child", variant, str(steps), size,
                          str(repeats), str(frames)],
                         cwd=REPO, env=env, capture_output=True, text=True, check=False)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode != 0 or not line:
        raise RuntimeError(f"{variant} N={steps} failed:\n{out.stderr[-3000:]}")
    return json.loads(line[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps-list", type=int, nargs="+", default=[8, 20, 40])
    parser.add_argument("--size", choices=list(SIZES), default="medium")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per process (median reported)")
    parser.add_argument("--variants", nargs="+", default=["ours", "naive", "ours_blocks_off"],
                        help="ours, naive, ours_blocks_off, ours_decode_plain, ours_decode_truncated")
    parser.add_argument("--frames-list", type=int, nargs="+", default=[0],
                        help="clip lengths to run (4k+1); 0: the size's own")
    parser.add_argument("--baseline", default="naive", help="the variant the ratios divide by")
    parser.add_argument("--child", nargs=5, metavar=("VARIANT", "N", "SIZE", "REPEATS", "FRAMES"))
    args = parser.parse_args()
    if args.child:
        result = child(args.child[0], int(args.child[1]), args.child[2], int(args.child[3]), int(args.child[4]))
        print("RESULT " + json.dumps(result), flush=True)
        return
    rows = {}
    for frames in args.frames_list:
        for n in args.steps_list:
            for variant in args.variants:
                rows[(variant, n, frames)] = r = run_child(variant, n, args.size, args.repeats, frames)
                times = ", ".join(f"{t:.2f}" + (" skipped" if why else "")
                                  for t, why in zip(r["all_seconds"], r["skipped"]))
                print(f"{variant:22s} N={n:3d} frames={r['frames']:3d}  median {r['seconds']:7.2f} s ({times})  "
                      f"peak +{r['peak_mb']:8.1f} MB  last reward frames {r['last_reward_frames']}", flush=True)
    print(f"\nsize {args.size}: {SIZES[args.size]}; median of the {args.repeats} timed steps per process that "
          f"ran a backward; ratios to {args.baseline}")
    base = args.baseline
    print(f"{'variant':22s} {'frames':>6} {'N':>4} {'s':>8} {'base s':>8} {'time ratio':>10} {'MB':>9} "
          f"{'base MB':>9} {'mem ratio':>9}")
    for frames in args.frames_list:
        for n in args.steps_list:
            v = rows.get((base, n, frames))
            for variant in args.variants:
                if variant == base or v is None:
                    continue
                o = rows[(variant, n, frames)]
                print(f"{variant:22s} {o['frames']:6d} {n:4d} {o['seconds']:8.2f} {v['seconds']:8.2f} "
                      f"{o['seconds'] / v['seconds']:10.3f} {o['peak_mb']:9.1f} {v['peak_mb']:9.1f} "
                      f"{o['peak_mb'] / max(v['peak_mb'], 1e-9):9.3f}")

if __name__ == "__main__":
    main()
