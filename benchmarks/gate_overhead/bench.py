"""Sampling time: gated identity adapter vs base vs always-on LoRA vs core's hook keyframe graph.

    .venv/bin/python -m benchmarks.gate_overhead.bench [--repeats 5] [--steps 20]

All four variants run on the same model and latent, interleaved (benchmarks/interleaved.py: each timed run after
an untimed one of the same variant). ComfyUI's classic cache is on, so only the sampler node re-runs (its seed
changes per run): the times are sampling times. Reported: median seconds per run, ratio to base.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.interleaved import median_seconds, ratio_table
from dev import tiny_models
from dev.comfy_runtime import ComfyRuntime

REPO = Path(__file__).resolve().parents[2]

SIZES = {
    # name: (Wan constructor overrides, latent width/height/frames)
    "tiny (tests)": ({}, (64, 64, 9)),
    "medium": (dict(dim=512, ffn_dim=2048, num_heads=4, num_layers=4), (128, 128, 17)),
}


def graph(variant: str, size: str, steps: int, seed: int) -> dict:
    _, (w, h, frames) = SIZES[size]
    tag = size.split()[0]
    n = {}

    def add(node_id, class_type, **inputs):
        n[node_id] = {"class_type": class_type, "inputs": inputs}
        return [node_id, 0]

    model = add("model", "UNETLoader", unet_name=f"bench_{tag}.safetensors", weight_dtype="default")
    pos = add("pos", "PersonalVideoDevTextEncodeStandIn", text="a person walking", width=4096, pooled_width=0,
              tokens=16)
    neg = add("neg", "PersonalVideoDevTextEncodeStandIn", text="blurry", width=4096, pooled_width=0, tokens=16)
    latent = add("latent", "EmptyHunyuanLatentVideo", width=w, height=h, length=frames, batch_size=1)
    lora_name = f"bench_{tag}_identity.safetensors"
    if variant == "gated":
        adapter = add("adapter", "PersonalVideoLoadIdentityAdapter", lora_name=lora_name)
        model = add("gated", "PersonalVideoApplyIdentityAdapter", model=model, adapter=adapter, strength=1.0,
                    gate_start=0.75, gate_mode="steps")
    elif variant == "always-on LoRA":
        model = add("lora", "LoraLoaderModelOnly", model=model, lora_name=lora_name, strength_model=1.0)
    elif variant == "hook keyframes":
        hooks = add("hooks", "CreateHookLoraModelOnly", lora_name=lora_name, strength_model=1.0)
        kf0 = add("kf0", "CreateHookKeyframe", strength_mult=0.0, start_percent=0.0)
        kf1 = add("kf1", "CreateHookKeyframe", strength_mult=1.0, start_percent=0.75, prev_hook_kf=kf0)
        hooks = add("setkf", "SetHookKeyframes", hooks=hooks, hook_kf=kf1)
        pos = add("pair", "PairConditioningSetProperties", positive_NEW=pos, negative_NEW=neg, strength=1.0,
                  set_cond_area="default", hooks=hooks)
        neg = ["pair", 1]
    sample = add("sample", "KSampler", model=model, positive=pos, negative=neg, latent_image=latent, seed=seed,
                 steps=steps, cfg=5.0, sampler_name="euler", scheduler="simple", denoise=1.0)
    add("out", "PersonalVideoDevCapture", value=sample, key="bench")
    return n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    rt = ComfyRuntime.boot(Path(tempfile.mkdtemp(prefix="pv_bench_")), cache=True)
    variants = ["base", "gated", "always-on LoRA", "hook keyframes"]
    print(f"ComfyUI {rt.version}, CPU, {args.steps} euler steps, CFG 5, median of {args.repeats} runs")
    for size, (overrides, _) in SIZES.items():
        tag = size.split()[0]
        tiny_models.write_diffusion_model("wan21", rt.model_dir("diffusion_models") / f"bench_{tag}.safetensors",
                                          **overrides)
        tiny_models.write_random_lora("wan21", rt.model_dir("loras") / f"bench_{tag}_identity.safetensors",
                                      rank=16, alpha=16.0, **overrides)
        medians = median_seconds(variants, lambda v, seed: rt.run(graph(v, size, args.steps, seed)), args.repeats)
        print(f"\n{size}: Wan 2.1 {overrides or 'dim 128, 2 layers'}, latent {SIZES[size][1]}")
        print(ratio_table(medians))

if __name__ == "__main__":
    main()
