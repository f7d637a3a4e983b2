"""Sampling time and memory: two region-routed identity adapters vs one plain gated adapter (and the base model).

    .venv/bin/python -m benchmarks.routing_overhead.bench [--repeats 5] [--steps 20] [--vae-dim 96]

The medium Wan 2.1 of benchmarks/gate_overhead (dim 512, ffn 2048, 4 heads, 4 layers; 128x128, 17 frames), 20 euler
steps, CFG 5, rank-16 LoRAs on every linear of the transformer blocks, gate at 0.75. Variants, interleaved round by
round in one process, each timed run after an untimed one of the same variant:

- base; gated: one adapter, Apply Identity Adapter (Gated) (the baseline of the ratio);
- routed, masks: two adapters, Apply Identity Adapters (Routed) with given masks (left and right halves);
- routed, automatic: two adapters, regions found at the gate. The decoder is dev/two_people.PhotoDecoder with
  ``run_vae``: the real Wan VAE (``--vae-dim``, 96 = the real Wan 2.1 VAE's shape, random weights) decodes the
  prediction and its output is dropped, then a real video of two faces is returned (a random model draws none), so
  SCRFD finds two faces and the adapters act on real-sized regions. Its time includes that decode and detection.

Time: wall seconds, and the process's CPU seconds (all threads; on a shared machine less disturbed by other
processes than wall time). Memory: the peak over each timed run minus what was in use before it (CUDA's max allocated on a GPU; the process's
resident set, sampled every 2 ms, on a CPU).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from dev import tiny_models
from dev.comfy_runtime import ComfyRuntime

MEDIUM = dict(dim=512, ffn_dim=2048, num_heads=4, num_layers=4)
LATENT = (1, 16, 5, 16, 16)  # 128x128, 17 frames


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--vae-dim", type=int, default=96)
    args = parser.parse_args()
    rt = ComfyRuntime.boot(Path(tempfile.mkdtemp(prefix="pv_routing_bench_")))
    import comfy.model_management as mm
    import comfy.sample
    import nodes
    import torch

    from dev.face_assets import make_pack
    from dev.peak_memory import Peak
    from dev.two_people import PhotoDecoder, two_people

    tiny_models.write_diffusion_model("wan21", rt.model_dir("diffusion_models") / "bench_medium.safetensors", **MEDIUM)
    for name, seed in (("a", 1), ("b", 3)):
        tiny_models.write_random_lora("wan21", rt.model_dir("loras") / f"bench_medium_{name}.safetensors", rank=16,
                                      alpha=16.0, seed=seed, **MEDIUM)
    tiny_models.write_wan_vae(rt.model_dir("vae") / "bench_vae.safetensors", dim=args.vae_dim)
    make_pack(rt.model_dir("insightface") / "models", "vectron_bench")
    get = nodes.NODE_CLASS_MAPPINGS.__getitem__
    adapters = [get("PersonalVideoLoadIdentityAdapter").execute(f"bench_medium_{n}.safetensors").args[0] for n in "ab"]
    identity = get("PersonalVideoLoadIdentityRewardModel").execute("vectron_bench", 640, 0.5).args[0]
    decoder = PhotoDecoder(nodes.VAELoader().load_vae("bench_vae.safetensors")[0], two_people(128, 128, frames=17),
                           run_vae=True)
    enc = get("PersonalVideoDevTextEncodeStandIn")()
    pos, neg = enc.encode("two people talking", 4096, 0, 16)[0], enc.encode("blurry", 4096, 0, 16)[0]
    left, right = torch.zeros(1, 128, 128), torch.zeros(1, 128, 128)
    left[..., :64], right[..., 64:] = 1.0, 1.0

    last = {}

    def routed(masks, regions, **extra):
        chain = None
        for adapter, mask in zip(adapters, masks):
            chain = get("PersonalVideoRoutedIdentity").execute(adapter, 1.0, None, mask, chain).args[0]

        def apply(model):
            last[regions] = get("PersonalVideoApplyRoutedIdentityAdapters").execute(
                model, chain, regions, "left to right", 1.8, "route the faces found", 0.75, "steps", True,
                **extra).args[0]
            return last[regions]
        return apply

    variants = {
        "base": lambda m: m,
        "gated (1 adapter)": lambda m: get("PersonalVideoApplyIdentityAdapter").execute(
            m, adapters[0], 1.0, 0.75, "steps", override_gate_start=True).args[0],
        "routed, masks (2)": routed([left, right], "given masks"),
        "routed, automatic (2)": routed([None, None], "automatic (faces at the gate)", vae=decoder,
                                        identity_reward=identity),
    }
    base_model = nodes.UNETLoader().load_unet("bench_medium.safetensors", "default")[0]
    cuda = mm.get_torch_device().type == "cuda"

    def run(name, seed):
        model = variants[name](base_model)
        noise = torch.randn(LATENT, generator=torch.Generator().manual_seed(seed))
        with Peak(cuda) as peak:
            t0, c0 = time.perf_counter(), time.process_time()
            comfy.sample.sample(model, noise, args.steps, 5.0, "euler", "simple", pos, neg, torch.zeros(LATENT),
                                seed=seed, disable_pbar=True)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        return seconds, cpu, peak.rise_mb

    times = {v: [] for v in variants}
    cpu_times = {v: [] for v in variants}
    rises = {v: [] for v in variants}
    for name in variants:
        run(name, 0)
    for r in range(args.repeats):
        for name in variants:
            run(name, 1000 + r)
            seconds, cpu, rise = run(name, r + 1)
            times[name].append(seconds)
            cpu_times[name].append(cpu)
            rises[name].append(rise)
    gated = statistics.median(times["gated (1 adapter)"])
    gated_cpu = statistics.median(cpu_times["gated (1 adapter)"])
    print(f"ComfyUI {rt.version}, {mm.get_torch_device()}, {args.steps} euler steps, CFG 5, median of {args.repeats}; "
          f"medium Wan {MEDIUM}, latent {LATENT}, Wan VAE dim {args.vae_dim}")
    print(f"{'variant':<24} {'median s':>9} {'vs gated':>9} {'CPU s':>8} {'vs gated':>9} {'peak rise MB':>13}")
    for name in variants:
        m, c = statistics.median(times[name]), statistics.median(cpu_times[name])
        print(f"{name:<24} {m:9.3f} {m / gated:9.3f} {c:8.3f} {c / gated_cpu:9.3f} "
              f"{statistics.median(rises[name]):13.1f}")
    wrappers = last["automatic (faces at the gate)"].wrappers["apply_model"]
    gate = next(fn.__self__ for fns in wrappers.values() for fn in fns)
    print(f"automatic regions: {len(decoder.latents)} decodes in {args.repeats * 2 + 1} automatic runs; the last "
          f"run's regions:\n{gate.regions.reports[-1]}")


if __name__ == "__main__":
    main()
