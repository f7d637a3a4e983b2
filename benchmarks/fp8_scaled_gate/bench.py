"""Sampling time on an fp8_scaled checkpoint: the gated identity adapter's gated steps vs plain fp8 sampling.

    .venv/bin/python -m benchmarks.fp8_scaled_gate.bench --fp8-compute on  [--repeats 3] [--steps 20] [--size tiny]
    .venv/bin/python -m benchmarks.fp8_scaled_gate.bench --fp8-compute off

A Wan 2.1-architecture model written as Comfy-Org's fp8_scaled files are (dev/fp8_files.py, ``scaled_fp8``), loaded
by core UNETLoader; ``--fp8-compute on`` sets ComfyUI's own switch (``SUPPORT_FP8_OPS``, what
``--supports-fp8-compute`` sets) before the model loads, so its layers multiply in fp8 as on a card with fp8
compute. Variants, interleaved round by round in one ComfyUI with its cache on (only the sampler re-runs), each
timed run after an untimed one of the same variant (the loaded model is already that variant's):

- base: plain fp8 sampling;
- gated from step 0: every step gated (the apply node, gate start 0): the cost of a gated step;
- gated 0.75: the apply node's default gate (the last quarter gated);
- always-on LoRA: core LoraLoaderModelOnly (merged once at load);
- weight function from step 0: the gate as it was before issue 20 (every gated call adds the delta through a weight
  function and computes dequantised), from step 0, for comparison.

Reported: median seconds per run and the ratio to base.
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
from pathlib import Path

from benchmarks.interleaved import median_seconds, ratio_table
from dev import tiny_models
from dev.comfy_runtime import ComfyRuntime, Graph
from dev.fp8_files import write_quantized

SIZES = {  # model overrides (tiny_models.write_diffusion_model), frame size (width, height, frames)
    "medium": (dict(dim=512, ffn_dim=2048, num_heads=4, num_layers=4), (128, 128, 17)),
    "tiny": ({}, (64, 64, 9)),  # the tests' model
}
VARIANTS = ["base", "gated from step 0", "gated 0.75", "always-on LoRA", "weight function from step 0"]


def graph(variant: str, size: str, steps: int, seed: int) -> dict:
    w, h, frames = SIZES[size][1]
    g = Graph()
    model = g.add("UNETLoader", unet_name="bench_fp8_scaled.safetensors", weight_dtype="default")
    enc = dict(width=4096, pooled_width=0, tokens=16)
    pos = g.add("PersonalVideoDevTextEncodeStandIn", text="a person walking", **enc)
    neg = g.add("PersonalVideoDevTextEncodeStandIn", text="blurry", **enc)
    latent = g.add("EmptyHunyuanLatentVideo", width=w, height=h, length=frames, batch_size=1)
    if variant == "always-on LoRA":
        model = g.add("LoraLoaderModelOnly", model=model, lora_name="bench_identity.safetensors", strength_model=1.0)
    elif variant != "base":
        adapter = g.add("PersonalVideoLoadIdentityAdapter", lora_name="bench_identity.safetensors")
        model = g.add("PersonalVideoApplyIdentityAdapter", model=model, adapter=adapter, strength=1.0,
                      gate_start=0.75 if variant == "gated 0.75" else 0.0, gate_mode="steps",
                      override_gate_start=True)
    sample = g.add("KSampler", model=model, positive=pos, negative=neg, latent_image=latent, seed=seed, steps=steps,
                   cfg=5.0, sampler_name="euler", scheduler="simple", denoise=1.0)
    g.capture(sample, "bench")
    return g.nodes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fp8-compute", choices=["on", "off"], required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", choices=sorted(SIZES), default="medium")
    args = parser.parse_args()
    rt = ComfyRuntime.boot(Path(tempfile.mkdtemp(prefix="pv_bench_fp8_")), cache=True)
    import comfy.model_management as mm

    mm.SUPPORT_FP8_OPS = args.fp8_compute == "on"
    model = SIZES[args.size][0]
    folder = rt.model_dir("diffusion_models")
    source = tiny_models.write_diffusion_model("wan21", folder / "bench_source.safetensors", **model)
    write_quantized(source, folder / "bench_fp8_scaled.safetensors", "scaled_fp8")
    tiny_models.write_random_lora("wan21", rt.model_dir("loras") / "bench_identity.safetensors", rank=16, alpha=16.0,
                                  **model)
    gate_module = importlib.import_module("personalvideo.nodes.runtime.gate")  # after boot: it imports ComfyUI
    merges = gate_module.stores_quantized

    def run(variant, seed):  # the old path: no layer counts as quantized, so the weight function acts
        gate_module.stores_quantized = (lambda m: False) if variant == "weight function from step 0" else merges
        rt.run(graph(variant, args.size, args.steps, seed))

    medians = median_seconds(VARIANTS, run, args.repeats)
    print(f"ComfyUI {rt.version}, CPU, fp8 compute {args.fp8_compute}; Wan 2.1 {model or 'tiny'}, "
          f"{SIZES[args.size][1]} frames, "
          f"{args.steps} euler steps, CFG 5, rank-16 LoRA on the blocks' linears; median of {args.repeats}")
    print(ratio_table(medians))

if __name__ == "__main__":
    main()
