"""Sampling time on an fp8_scaled checkpoint: the gated identity adapter's gated steps vs plain fp8 sampling.

    .venv/bin/python benchmarks/fp8_scaled_gate/bench.py --fp8-compute on  [--repeats 3] [--steps 20]
    .venv/bin/python benchmarks/fp8_scaled_gate/bench.py --fp8-compute off

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
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from dev import tiny_models  # noqa: E402
from dev.comfy_runtime import ComfyRuntime  # noqa: E402
from dev.fp8_files import write_quantized  # noqa: E402

MODEL = dict(dim=512, ffn_dim=2048, num_heads=4, num_layers=4)
SIZE = (128, 128, 17)
VARIANTS = ["base", "gated from step 0", "gated 0.75", "always-on LoRA", "weight function from step 0"]


def graph(variant: str, steps: int, seed: int) -> dict:
    from graphs import Graph

    w, h, frames = SIZE
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
    args = parser.parse_args()
    rt = ComfyRuntime.boot(Path(tempfile.mkdtemp(prefix="pv_bench_fp8_")), cache=True)
    import comfy.model_management as mm
    from graphs import pack_module

    mm.SUPPORT_FP8_OPS = args.fp8_compute == "on"
    folder = rt.model_dir("diffusion_models")
    source = tiny_models.write_diffusion_model("wan21", folder / "bench_source.safetensors", **MODEL)
    write_quantized(source, folder / "bench_fp8_scaled.safetensors", "scaled_fp8")
    tiny_models.write_random_lora("wan21", rt.model_dir("loras") / "bench_identity.safetensors", rank=16, alpha=16.0,
                                  **MODEL)
    gate_module = pack_module("nodes.runtime.gate")
    merges = gate_module.stores_quantized

    def run(variant, seed):  # the old path: no layer counts as quantized, so the weight function acts
        gate_module.stores_quantized = (lambda m: False) if variant == "weight function from step 0" else merges
        rt.run(graph(variant, args.steps, seed))

    times = {v: [] for v in VARIANTS}
    for v in VARIANTS:  # warm-up: load and cache everything upstream of the sampler
        run(v, 0)
    for r in range(args.repeats):
        for v in VARIANTS:
            run(v, 1000 + r)  # switch the loaded model to v
            t0 = time.perf_counter()
            run(v, r + 1)
            times[v].append(time.perf_counter() - t0)
    base = statistics.median(times["base"])
    print(f"ComfyUI {rt.version}, CPU, fp8 compute {args.fp8_compute}; Wan 2.1 {MODEL}, latent {SIZE}, "
          f"{args.steps} euler steps, CFG 5, rank-16 LoRA on the blocks' linears; median of {args.repeats}")
    print(f"{'variant':<30} {'median s':>9} {'vs base':>8}")
    for v in VARIANTS:
        m = statistics.median(times[v])
        print(f"{v:<30} {m:9.3f} {m / base:8.3f}")


if __name__ == "__main__":
    main()
