"""Sampling time: gated identity adapter vs base vs always-on LoRA vs core's hook keyframe graph.

    .venv/bin/python -m benchmarks.gate_overhead.bench [--repeats 5] [--steps 20]

All four variants run in one process, in one ComfyUI, interleaved round by round, on the same model and
latent. ComfyUI's classic cache is on, so only the sampler node re-runs (its seed changes per run): the
times are sampling times. In each round every variant runs twice and only the second run is timed: the
first pays for switching ComfyUI's loaded model to that variant (re-patching weights for the LoRA), which
a user sampling the same graph repeatedly does not pay. Reported: median seconds per run, ratio to base.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

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
        times = {v: [] for v in variants}
        for v in variants:  # warm-up: load and cache everything upstream of the sampler
            rt.run(graph(v, size, args.steps, seed=0))
        for r in range(args.repeats):
            for v in variants:
                rt.run(graph(v, size, args.steps, seed=1000 + r))  # switch the loaded model to v
                t0 = time.perf_counter()
                rt.run(graph(v, size, args.steps, seed=r + 1))
                times[v].append(time.perf_counter() - t0)
        base = statistics.median(times["base"])
        print(f"\n{size}: Wan 2.1 {overrides or 'dim 128, 2 layers'}, latent {SIZES[size][1]}")
        print(f"{'variant':<16} {'median s':>9} {'vs base':>8}")
        for v in variants:
            m = statistics.median(times[v])
            print(f"{v:<16} {m:9.3f} {m / base:8.3f}")


if __name__ == "__main__":
    main()
