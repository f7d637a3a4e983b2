"""The measurements of benchmarks/gpu_check.sh: training step time and peak memory, gate overhead; one table.

    .venv/bin/python -m benchmarks.gpu_check.check --mode full      # on a GPU (gpu_check.sh sets the device)
    .venv/bin/python -m benchmarks.gpu_check.check --mode reduced   # anywhere, tiny sizes (the test runs this)

Rows, each on the same model, latent size, prompt draws and seed:
- one training step (the trainer node's code path: ComfyBackend + Trainer, the real w600k_mbf ArcFace and SCRFD
  at threshold 0.05 as in the tests) with checkpoint_blocks on / off x fp8 off / on (UNETLoader weight_dtype
  ``fp8_e4m3fn``), with decode_gradient ``plain`` instead of ``checkpointed``, and with ComfyUI's
  ``--cpu-vae`` (its own process: the frames cross from the CPU VAE to the rewards on the GPU);
- sampling with KSampler: base model vs the gated identity adapter (Apply Identity Adapter, gate 0.75), and the same
  model written as an fp8_scaled file (dev/fp8_files.py, Comfy-Org's layout): base vs the adapter gated from step 0
  (every step gated: the cost of a gated step on fp8_scaled, issue 20).
Seconds: the timed step / run (after ``warmup`` untimed ones; a step that found no face in its reward frames
runs no backward and is retried with the next draw, at most 3 times). Peak MB: on CUDA
``torch.cuda.max_memory_allocated`` during it (weights included); on the CPU the process's peak resident set.

full: a Wan 2.1 1.3B-shaped model (dim 1536, 30 layers, random weights), the real Wan VAE's shape (dim 96),
832x480, 33 frames (14,040 video tokens), 512 text tokens, 20 steps. reduced: the tests' tiny model, 64x64x9,
4 steps, no warm-up (it shows the script works; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODES = {
    "full": dict(model=dict(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30), size=(832, 480, 33), steps=20,
                 tokens=512, vae_dim=96, warmup=1),
    "reduced": dict(model={}, size=(64, 64, 9), steps=4, tokens=16, vae_dim=8, warmup=0),
}
TRAIN_ROWS = [  # label, checkpoint_blocks, UNETLoader weight_dtype, decode_gradient
    ("train step: blocks on, fp8 off", True, "default", "checkpointed"),
    ("train step: blocks off, fp8 off", False, "default", "checkpointed"),
    ("train step: blocks on, fp8 on", True, "fp8_e4m3fn", "checkpointed"),
    ("train step: blocks off, fp8 on", False, "fp8_e4m3fn", "checkpointed"),
    ("train step: blocks on, decode plain", True, "default", "plain"),
]
CPU_VAE_ROW = "train step: blocks on, --cpu-vae"
FP8_SCALED = "check_fp8_scaled.safetensors"


def sampling_labels(steps: int) -> list[tuple[str, str, float | None]]:
    """(row label, diffusion model file, gate start or None for no adapter) of the sampling rows."""
    return [(f"sampling {steps} steps: base", "check.safetensors", None),
            (f"sampling {steps} steps: gated adapter", "check.safetensors", 0.75),
            (f"sampling {steps} steps: fp8_scaled base", FP8_SCALED, None),
            (f"sampling {steps} steps: fp8_scaled gated from step 0", FP8_SCALED, 0.0)]


def setup(base: Path, mode: str, write: bool):
    from dev import tiny_models
    from dev.comfy_runtime import ComfyRuntime
    from dev.face_assets import make_pack, photo_path

    cfg = MODES[mode]
    rt = ComfyRuntime.boot(base, cache=True)
    if write:
        from dev.fp8_files import write_quantized

        folder = rt.model_dir("diffusion_models")
        tiny_models.write_diffusion_model("wan21", folder / "check.safetensors", **cfg["model"])
        write_quantized(folder / "check.safetensors", folder / FP8_SCALED, "scaled_fp8")
        tiny_models.write_wan_vae(rt.model_dir("vae") / "check_vae.safetensors", dim=cfg["vae_dim"])
        tiny_models.write_random_lora("wan21", rt.model_dir("loras") / "check_identity.safetensors", rank=16,
                                      alpha=16.0, **cfg["model"])
        make_pack(rt.model_dir("insightface") / "models", "vectron_s")
        shutil.copy(photo_path("obama.jpg"), rt.base_dir / "input" / "obama.jpg")
    return rt


def train_row(rt, mode: str, blocks: bool, weight_dtype: str, decode: str) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    import comfy.model_management as mm
    import nodes
    from dev.peak_memory import Peak

    cfg = MODES[mode]
    width, height, frames = cfg["size"]
    from personalvideo.nodes.runtime import autograd, reward_devices
    from personalvideo.nodes.runtime import backend as tb
    from personalvideo.nodes.runtime import model as tn
    from personalvideo.training import prompts
    from personalvideo.training.identity import reference
    from personalvideo.training.identity import reward as ident
    from personalvideo.training.loop import trainer as trainer_mod

    device = mm.get_torch_device()
    with autograd.training_mode():
        model = nodes.UNETLoader().load_unet("check.safetensors", weight_dtype)[0]
        vae = nodes.VAELoader().load_vae("check_vae.safetensors")[0]
        clip = nodes.NODE_CLASS_MAPPINGS["PersonalVideoDevCLIPStandIn"]().load(4096, 0, cfg["tokens"])[0]
        idm = ident.load_identity_reward_model(rt.model_dir("insightface") / "models" / "vectron_s",
                                               det_threshold=0.05, load_device=device,
                                               offload_device=mm.unet_offload_device())
        photo = torch.from_numpy(np.asarray(Image.open(rt.base_dir / "input" / "obama.jpg").convert("RGB"),
                                            dtype=np.float32) / 255.0)
        ref = reference.build_reference(idm, [photo], 2, 0.05, 0.1, 0)
        settings = trainer_mod.TrainSettings(steps=10, learning_rate=1e-3, rank=16, alpha=16.0,
                                             sampling_steps=cfg["steps"], cfg=5.0, frames_per_reward=4, seed=0)
        params, gate, patched = tn.attach_trainable_adapter(model, tn.adapter_targets(model, "attention").shapes, 16,
                                                            16.0, 0, 0.75, device)
        sampling = tb.ComfyBackendSettings("blurry", width, height, frames, cfg["steps"], 5.0, checkpoint_blocks=blocks,
                                           decode_gradient=decode, reward_device=device)
        backend = tb.ComfyBackend(patched, gate, clip, vae, sampling)
        bank = prompts.build_prompt_bank("a man", "", "blurry")
        backend.encode_prompts(bank.prompts)  # as the trainer node does: all before the first step
        trainer = trainer_mod.Trainer(backend, params, bank, settings,
                                      identity_reward=lambda f: idm.reward(f, ref.embedding))
        with reward_devices.reward_models_on(device, idm.recognizer):
            for step in range(cfg["warmup"]):
                trainer.train_step(step)
            for step in range(cfg["warmup"], cfg["warmup"] + 3):
                with Peak(device.type == "cuda") as peak:
                    t0 = time.perf_counter()
                    record = trainer.train_step(step)
                    seconds = time.perf_counter() - t0
                if not record.skipped:
                    break
    result = {"seconds": seconds, "peak_mb": peak.mb, "note": record.skipped or f"loss {record.loss:.4f}",
              "vae_device": str(vae.device)}
    del trainer, backend, params, gate, patched, model, vae, clip, idm
    mm.unload_all_models()
    gc.collect()
    mm.soft_empty_cache()
    return result


def sampling_rows(rt, mode: str) -> dict[str, dict]:
    import comfy.model_management as mm
    from dev.peak_memory import Peak
    from dev.comfy_runtime import Graph

    cfg = MODES[mode]
    width, height, frames = cfg["size"]

    def graph(unet: str, gate_start: float | None, seed: int) -> dict:
        g = Graph()
        m = g.add("UNETLoader", unet_name=unet, weight_dtype="default")
        if gate_start is not None:
            adapter = g.add("PersonalVideoLoadIdentityAdapter", lora_name="check_identity.safetensors")
            m = g.add("PersonalVideoApplyIdentityAdapter", model=m, adapter=adapter, strength=1.0,
                      gate_start=gate_start, gate_mode="steps", override_gate_start=True)
        enc = dict(width=4096, pooled_width=0, tokens=cfg["tokens"])
        pos = g.add("PersonalVideoDevTextEncodeStandIn", text="a man walking on a beach", **enc)
        neg = g.add("PersonalVideoDevTextEncodeStandIn", text="blurry", **enc)
        lat = g.add("EmptyHunyuanLatentVideo", width=width, height=height, length=frames, batch_size=1)
        s = g.add("KSampler", model=m, positive=pos, negative=neg, latent_image=lat, seed=seed, steps=cfg["steps"],
                  cfg=5.0, sampler_name="euler", scheduler="simple", denoise=1.0)
        g.capture(s, "gpu_check")
        return g.nodes

    rows = {}
    for label, unet, gate_start in sampling_labels(cfg["steps"]):
        rt.run(graph(unet, gate_start, seed=100))  # load, patch and cache everything upstream of the sampler
        with Peak(mm.get_torch_device().type == "cuda") as peak:
            t0 = time.perf_counter()
            rt.run(graph(unet, gate_start, seed=1))
            seconds = time.perf_counter() - t0
        rows[label] = {"seconds": seconds, "peak_mb": peak.mb, "note": ""}
    mm.unload_all_models()
    return rows


def cpu_vae_row(base: Path, mode: str) -> dict:
    """The trainer with ComfyUI's --cpu-vae, in its own process (ComfyUI's arguments are fixed at boot)."""
    env = dict(os.environ, PERSONALVIDEO_COMFY_ARGS=(os.environ.get("PERSONALVIDEO_COMFY_ARGS", "") + " --cpu-vae"))
    out = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check.check", "--mode", mode, "--base", str(base),
                          "--child-cpu-vae"],
                         cwd=REPO, env=env, capture_output=True, text=True, check=False)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode != 0 or not line:
        raise RuntimeError(f"the --cpu-vae row failed:\n{out.stderr[-3000:]}")
    return json.loads(line[-1][len("RESULT "):])


def table(rows: dict[str, dict]) -> str:
    first_train = rows[TRAIN_ROWS[0][0]]
    base = next(v for k, v in rows.items() if k.endswith(": base"))
    fp8_base = next(v for k, v in rows.items() if k.endswith(": fp8_scaled base"))
    lines = [f"{'check':52s} {'seconds':>9} {'peak MB':>10} {'vs ref':>7}  note"]
    for label, r in rows.items():
        ref = first_train if label.startswith("train") else fp8_base if "fp8_scaled" in label else base
        lines.append(f"{label:52s} {r['seconds']:9.3f} {r['peak_mb']:10.1f} {r['seconds'] / ref['seconds']:7.3f}  "
                     f"{r['note']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=list(MODES), default="full")
    parser.add_argument("--base", help="ComfyUI base directory (default: a new temporary one)")
    parser.add_argument("--child-cpu-vae", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    base = Path(args.base or tempfile.mkdtemp(prefix="pv_gpu_check_"))
    rt = setup(base, args.mode, write=not args.child_cpu_vae)
    if args.child_cpu_vae:
        r = train_row(rt, args.mode, True, "default", "checkpointed")
        r["note"] += f"; VAE on {r['vae_device']}"
        print("RESULT " + json.dumps(r), flush=True)
        return 0
    import comfy.model_management as mm
    import comfy.model_patcher
    import torch

    started = time.perf_counter()
    rows: dict[str, dict] = {}
    for label, blocks, weight_dtype, decode in TRAIN_ROWS:
        rows[label] = train_row(rt, args.mode, blocks, weight_dtype, decode)
        print(f"{label}: {rows[label]}", flush=True)
    rows[CPU_VAE_ROW] = cpu_vae_row(base, args.mode)
    print(f"{CPU_VAE_ROW}: {rows[CPU_VAE_ROW]}", flush=True)
    rows.update(sampling_rows(rt, args.mode))
    device = mm.get_torch_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    w, h, f = MODES[args.mode]["size"]
    # the class MODELs get: 0.33 names it CoreModelPatcher (ModelPatcherDynamic with DynamicVRAM on); 0.3.75 has none
    patcher = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher).__name__
    print(f"\nPersonalVideo GPU check ({args.mode}): ComfyUI {rt.version} on {device} ({name}), torch "
          f"{torch.__version__}; Wan 2.1 {MODES[args.mode]['model'] or 'tiny'}, {w}x{h}x{f}, "
          f"{MODES[args.mode]['steps']} steps; models on {patcher}; "
          f"{time.perf_counter() - started:.0f} s")
    print(table(rows), flush=True)
    bad = [k for k, r in rows.items() if not (math.isfinite(r["seconds"]) and math.isfinite(r["peak_mb"]))]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
