"""The main job on a tiny built-in model: sample a video with the gated identity adapter in real ComfyUI.

    scripts/run_demo.sh            (sets up the environment, then runs this)

What it runs: a tiny random-weight Wan 2.1 model and VAE (ComfyUI's own classes, loaded by core
UNETLoader / VAELoader), stand-in text conditioning, an identity adapter (a random LoRA for now: the
trainer arrives with the training issue) applied by PersonalVideoApplyIdentityAdapter to the last
quarter of a 20-step KSampler run, core VAEDecode, and core SaveAnimatedWEBP. Random weights show
that the pipeline runs end to end, not image quality. For real models, load the same graph in
ComfyUI with your Wan 2.1 checkpoint, its text encoder and VAE in place of the tiny files.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dev import tiny_models  # noqa: E402
from dev.comfy_runtime import ComfyRuntime  # noqa: E402


def demo_graph(steps: int, start_percent: float) -> dict:
    def node(class_type, **inputs):
        return {"class_type": class_type, "inputs": inputs}

    return {
        "model": node("UNETLoader", unet_name="tiny_wan21.safetensors", weight_dtype="default"),
        "vae": node("VAELoader", vae_name="tiny_wan21_vae.safetensors"),
        "pos": node("PersonalVideoDevTextEncodeStandIn", text="a person walking along a beach at sunset",
                    width=4096, pooled_width=0, tokens=16),
        "neg": node("PersonalVideoDevTextEncodeStandIn", text="blurry, static", width=4096, pooled_width=0,
                    tokens=16),
        "latent": node("EmptyHunyuanLatentVideo", width=64, height=64, length=17, batch_size=1),
        "adapter": node("PersonalVideoLoadIdentityAdapter", lora_name="demo_identity_wan21.safetensors"),
        "gated": node("PersonalVideoApplyIdentityAdapter", model=["model", 0], adapter=["adapter", 0],
                      strength=1.0, start_percent=start_percent, gate_mode="steps"),
        "sample": node("KSampler", model=["gated", 0], positive=["pos", 0], negative=["neg", 0],
                       latent_image=["latent", 0], seed=42, steps=steps, cfg=5.0, sampler_name="euler",
                       scheduler="simple", denoise=1.0),
        "decode": node("VAEDecode", samples=["sample", 0], vae=["vae", 0]),
        "video": node("SaveAnimatedWEBP", images=["decode", 0], filename_prefix="personalvideo_demo/video",
                      fps=8.0, lossless=False, quality=90, method="default"),
        "save_adapter": node("PersonalVideoSaveIdentityAdapter", adapter=["adapter", 0],
                             filename_prefix="personalvideo_demo/identity", start_percent=start_percent,
                             model=["model", 0]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=REPO / "output", help="where results are copied")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--start-percent", type=float, default=0.75)
    args = parser.parse_args()

    started = time.time()
    base = REPO / ".demo"
    rt = ComfyRuntime.boot(base)
    tiny_models.write_diffusion_model("wan21", rt.model_dir("diffusion_models") / "tiny_wan21.safetensors")
    tiny_models.write_wan_vae(rt.model_dir("vae") / "tiny_wan21_vae.safetensors")
    tiny_models.write_random_lora("wan21", rt.model_dir("loras") / "demo_identity_wan21.safetensors", std=0.15)
    shutil.rmtree(base / "output" / "personalvideo_demo", ignore_errors=True)
    shutil.rmtree(rt.model_dir("loras") / "personalvideo_demo", ignore_errors=True)

    rt.run(demo_graph(args.steps, args.start_percent))

    args.output.mkdir(parents=True, exist_ok=True)
    written = []
    for src in sorted((base / "output" / "personalvideo_demo").glob("*")):
        written.append(shutil.copy2(src, args.output / src.name))
    for src in sorted((rt.model_dir("loras") / "personalvideo_demo").glob("*.safetensors")):
        written.append(shutil.copy2(src, args.output / src.name))
    if not any(str(w).endswith(".webp") for w in written):
        print("demo failed: no video was written", file=sys.stderr)
        return 1
    print(f"PersonalVideo demo on ComfyUI {rt.version}: {args.steps} steps, identity adapter gated from step "
          f"{args.start_percent:g}·N, in {time.time() - started:.1f} s. Wrote:")
    for w in written:
        print(f"  {w}")
    print("These come from a tiny random-weight model: they show the pipeline runs, not quality. "
          "See README.md for running the nodes on real Wan 2.1 / HunyuanVideo models.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
