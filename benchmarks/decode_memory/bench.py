"""Peak memory of the trainer's VAE decode with gradient (forward + backward) by decode_gradient and clip length.

    .venv/bin/python -m benchmarks.decode_memory.bench [--frames 33 49 81] [--size 128] [--vae-dim 8]

The decode alone, through ``ComfyBackend.decode`` (the trainer's code path) on a Wan 2.1 VAE built from ComfyUI's
class with random weights and loaded by core VAELoader: 4 reward frames spread over the clip, the last one the
clip's last frame (so every latent frame is decoded, the worst case of the random draw), then backward of a
random weighted sum into the latent. Each (mode, frames) runs in its own process with glibc returning freed
memory to the OS; peak = highest resident set during decode + backward minus the resident set just before.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODES = ("plain", "checkpointed", "truncated")


def child(mode: str, frames: int, size: int, vae_dim: int) -> dict:
    import torch

    from dev import tiny_models
    from dev.peak_memory import Peak
    from dev.comfy_runtime import ComfyRuntime

    rt = ComfyRuntime.boot(Path(tempfile.mkdtemp(prefix="pv_decode_bench_")))
    tiny_models.write_wan_vae(rt.model_dir("vae") / "v.safetensors", dim=vae_dim)
    tiny_models.write_diffusion_model("wan21", rt.model_dir("diffusion_models") / "m.safetensors")
    import nodes

    from personalvideo.nodes.runtime import autograd
    from personalvideo.nodes.runtime import backend as tb
    from personalvideo.nodes.runtime.latent_geometry import latent_geometry

    with autograd.training_mode():
        model = nodes.UNETLoader().load_unet("m.safetensors", "default")[0]
        vae = nodes.VAELoader().load_vae("v.safetensors")[0]
        autograd.make_trainable(model.model, model.model.latent_format)
        autograd.make_trainable(vae.first_stage_model)
    backend = object.__new__(tb.ComfyBackend)  # only what decode() reads
    backend.patcher, backend.vae = model, vae
    backend.settings = tb.ComfyBackendSettings("", size, size, frames, 1, 1.0, decode_gradient=mode)
    backend.geometry = latent_geometry(model, vae)
    latent_frames = (frames - 1) // 4 + 1
    picks = [0, frames // 3, 2 * frames // 3, frames - 1]
    gen = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 16, latent_frames, size // 8, size // 8, generator=gen)
    weights = torch.randn(len(picks), size, size, 3, generator=gen)

    def step():
        z = latent.clone().requires_grad_(True)
        with autograd.training_mode():
            (backend.decode(z, picks) * weights).sum().backward()
        return z.grad

    step()  # warm-up: one-time allocations
    with Peak() as peak:
        t0 = time.perf_counter()
        grad = step()
        seconds = time.perf_counter() - t0
    return {"mode": mode, "frames": frames, "peak_mb": peak.rise_mb, "seconds": seconds,
            "grad_norm": float(grad.norm())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, nargs="+", default=[33, 49, 81])
    parser.add_argument("--modes", nargs="+", default=list(MODES))
    parser.add_argument("--size", type=int, default=128, help="square frame size in pixels")
    parser.add_argument("--vae-dim", type=int, default=8, help="Wan VAE width (the real one: 96)")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "FRAMES", "SIZE", "VAE_DIM"))
    args = parser.parse_args()
    if args.child:
        m, f, s, d = args.child
        print("RESULT " + json.dumps(child(m, int(f), int(s), int(d))), flush=True)
        return
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    rows = {}
    for frames in args.frames:
        for mode in args.modes:
            out = subprocess.run([sys.executable, "-m", "benchmarks.decode_memory.bench", "--child", mode, str(frames),
                                  str(args.size), str(args.vae_dim)], cwd=REPO, env=env, capture_output=True, text=True, check=False)
            line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            if out.returncode != 0 or not line:
                raise RuntimeError(f"{mode} {frames} failed:\n{out.stderr[-3000:]}")
            rows[(mode, frames)] = r = json.loads(line[-1][len("RESULT "):])
            print(f"{mode:13s} frames {frames:3d}: peak +{r['peak_mb']:8.1f} MB, {r['seconds']:6.2f} s, "
                  f"|grad| {r['grad_norm']:.6g}", flush=True)
    print(f"\nWan VAE dim {args.vae_dim}, {args.size}x{args.size}; peak MB of decode + backward (ratio to plain)")
    print("| frames | " + " | ".join(args.modes) + " |")
    print("|---|" + "---|" * len(args.modes))
    for frames in args.frames:
        plain = rows.get(("plain", frames))
        cells = []
        for mode in args.modes:
            r = rows[(mode, frames)]
            ratio = f" ({r['peak_mb'] / plain['peak_mb']:.3f})" if plain and mode != "plain" else ""
            cells.append(f"{r['peak_mb']:.1f}{ratio}")
        print(f"| {frames} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
