"""Small builders for API-format graphs run in the real ComfyUI of the ``comfy`` fixture."""

from __future__ import annotations

import importlib

import torch

from dev import tiny_models
from dev.comfy_runtime import Graph  # noqa: F401  (tests build graphs from here)

MODEL_FILES = {f: f"tiny_{f}.safetensors" for f in tiny_models.FAMILIES}


def pack_module(name: str):
    """The pack's module ``personalvideo.<name>`` (e.g. ``"nodes.runtime.backend"``), imported when called: modules
    of nodes/ import ComfyUI, which is importable once the ``comfy`` fixture has booted it. It is the module
    ComfyUI's nodes use (dev/comfy_runtime.py: one copy of each)."""
    return importlib.import_module("personalvideo." + name)


WAN_VAE = "tiny_wan_vae.safetensors"


def install_models(comfy) -> None:
    """Write the tiny random models (diffusion models, LoRAs, the Wan VAE) into the runtime's models folders (once
    per session)."""
    if not (comfy.model_dir("vae") / WAN_VAE).exists():
        tiny_models.write_wan_vae(comfy.model_dir("vae") / WAN_VAE)
    for family, name in MODEL_FILES.items():
        path = comfy.model_dir("diffusion_models") / name
        if not path.exists():
            tiny_models.write_diffusion_model(family, path)
    lora_dir = comfy.model_dir("loras")
    for family in tiny_models.FAMILIES:
        if not (lora_dir / f"identity_{family}.safetensors").exists():
            tiny_models.write_random_lora(family, lora_dir / f"identity_{family}.safetensors", seed=1, std=0.15)
            tiny_models.write_random_lora(family, lora_dir / f"style_{family}.safetensors", seed=2, std=0.12)


# Wan 2.2 A14B in tests: two tiny Wan 2.1-architecture experts (ComfyUI loads the real ones as WAN21_T2V too)
EXPERTS = {"high_noise": 21, "low_noise": 22}  # expert -> seed of its tiny random weights


def expert_file(expert: str) -> str:
    return f"tiny_wan22_{expert}.safetensors"


def install_experts(comfy) -> None:
    """The tiny models, plus the two Wan 2.2 A14B experts (once per session)."""
    install_models(comfy)
    for expert, seed in EXPERTS.items():
        path = comfy.model_dir("diffusion_models") / expert_file(expert)
        if not path.exists():
            tiny_models.write_diffusion_model("wan21", path, seed=seed)


def base_graph(family: str, steps: int = 8, cfg: float = 3.0, prompt: str = "a person walking on a beach"):
    """Graph with a tiny model, stand-in text conditioning and an empty video latent."""
    g = Graph()
    width = tiny_models.CONTEXT_WIDTH[family]
    pooled = tiny_models.POOLED_WIDTH[family]
    model = g.add("UNETLoader", unet_name=MODEL_FILES[family], weight_dtype="default")
    pos = g.add("PersonalVideoDevTextEncodeStandIn", text=prompt, width=width, pooled_width=pooled, tokens=16)
    neg = g.add("PersonalVideoDevTextEncodeStandIn", text="blurry", width=width, pooled_width=pooled, tokens=16)
    latent = g.add("EmptyHunyuanLatentVideo", width=64, height=64, length=9, batch_size=1)
    return g, model, pos, neg, latent


def ksampler(g: Graph, model, pos, neg, latent, steps=8, cfg=3.0, sampler="euler", scheduler="simple",
             denoise=1.0, seed=7):
    return g.add("KSampler", model=model, positive=pos, negative=neg, latent_image=latent, seed=seed,
                 steps=steps, cfg=cfg, sampler_name=sampler, scheduler=scheduler, denoise=denoise)


def gated(g: Graph, model, lora_name: str, start=None, strength=1.0, mode="steps"):
    """Load Identity Adapter + Apply. ``start`` None: the apply node's default (the gate start the file records,
    0.75 when it records none, as for the random test LoRAs); a number: that gate start (override on)."""
    adapter = g.add("PersonalVideoLoadIdentityAdapter", lora_name=lora_name)
    return g.add("PersonalVideoApplyIdentityAdapter", model=model, adapter=adapter, strength=strength,
                 gate_start=0.75 if start is None else start, gate_mode=mode, override_gate_start=start is not None)


def lora(g: Graph, model, lora_name: str, strength=1.0):
    return g.add("LoraLoaderModelOnly", model=model, lora_name=lora_name, strength_model=strength)


def run_latent(comfy, g: Graph, link, key="out") -> torch.Tensor:
    g.capture(link, key)
    comfy.run(g.nodes)
    return comfy.captured()[key]["samples"].clone()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def directional_gradient_check(backend, params, run_loss, prompt, seed, eps=2e-3):
    """(analytic, numeric, values): the gradient of ``backend.run(prompt, seed, run_loss)`` along a fixed random
    direction of the adapter's parameters, by backward and by central differences (call inside the backend's
    training mode). The numeric value is Richardson-extrapolated from steps ``eps`` and ``2 * eps``, which cancels
    the central difference's eps^2 error: the sampled video is far from linear in the adapter (on the tiny
    HunyuanVideo 1.5 the plain central difference is off by 0.0023 of -0.718 at eps 1e-3 and by 0.23 at 1e-2),
    while a smaller step drowns in the float32 rounding of a loss of ~50 (its values: ``values``)."""
    backend.run(prompt, seed, lambda *a: run_loss(*a).backward())
    direction = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) for i, p in
                 enumerate(params.parameters())]
    analytic = sum(float((p.grad * d).sum()) for p, d in zip(params.parameters(), direction))
    start = [p.detach().clone() for p in params.parameters()]
    values = []
    for step in (eps, -eps, 2 * eps, -2 * eps):
        with torch.no_grad():
            for p, p0, d in zip(params.parameters(), start, direction):
                p.copy_(p0 + step * d)
            values.append(float(backend.run(prompt, seed, run_loss)))
    with torch.no_grad():
        for p, p0 in zip(params.parameters(), start):
            p.copy_(p0)
    central = [(values[0] - values[1]) / (2 * eps), (values[2] - values[3]) / (4 * eps)]
    return analytic, (4 * central[0] - central[1]) / 3, values
