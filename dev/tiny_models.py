"""Tiny native video models with random weights, built from ComfyUI's own model classes.

They load through ComfyUI's ordinary loader nodes (UNETLoader, VAELoader), which detect the family from
the keys exactly as for the real model files. They show that the pipeline works, not quality. Weights are
generated on demand (seeded) and never committed. Needs ComfyUI importable (``dev.comfy_runtime`` boots it).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from .tiny_weights import random_weights

FAMILIES = ("wan21", "hunyuan_video")
# HunyuanVideo 1.5, LTX-Video and CogVideoX (dev/tiny_families.py; CogVideoX only where this ComfyUI has it).
MORE_FAMILIES = ("hunyuan_video_15", "ltxv", "cogvideox")
# Conditioning width each tiny model expects from the text encoder stand-in (Wan's detector fixes 4096).
CONTEXT_WIDTH = {"wan21": 4096, "hunyuan_video": 768, "hunyuan_video_15": 768, "ltxv": 4096, "cogvideox": 4096}
POOLED_WIDTH = {"wan21": 0, "hunyuan_video": 768, "hunyuan_video_15": 768, "ltxv": 0, "cogvideox": 0}


def build_diffusion_model(family: str, **overrides) -> torch.nn.Module:
    """The tiny model of ``family``; ``overrides`` change its constructor sizes (e.g. dim for benchmarks)."""
    import comfy.ops

    ops = comfy.ops.manual_cast
    if family == "wan21":
        from comfy.ldm.wan.model import WanModel

        params = dict(model_type="t2v", dim=128, ffn_dim=256, num_heads=1, num_layers=2, in_dim=16, out_dim=16,
                      text_dim=4096)
        return WanModel(operations=ops, **(params | overrides))
    if family == "hunyuan_video":
        import dataclasses

        from comfy.ldm.hunyuan_video.model import HunyuanVideo, HunyuanVideoParams

        params = dict(in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=768, hidden_size=128,
                      mlp_ratio=4.0, num_heads=1, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56],
                      theta=256, patch_size=[1, 2, 2], qkv_bias=True, guidance_embed=False)
        # Later ComfyUI versions add HunyuanVideo 1.5 switches (byt5, meanflow, ...): all off for 1.0.
        for f in dataclasses.fields(HunyuanVideoParams):
            params.setdefault(f.name, False if f.type in (bool, "bool") else None)
        return HunyuanVideo(image_model="hunyuan_video", operations=ops, **(params | overrides))
    if family in MORE_FAMILIES:
        from .tiny_families import build_family_model

        return build_family_model(family, ops, **overrides)
    raise ValueError(f"family: got {family!r}, expected one of {FAMILIES + MORE_FAMILIES}")


def write_diffusion_model(family: str, path: Path | str, seed: int = 0, **overrides) -> Path:
    """A random-weight diffusion model file that core UNETLoader loads as ``family``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = build_diffusion_model(family, **overrides)
    save_file(random_weights(model, seed), str(path))
    return path


def write_wan_vae(path: Path | str, seed: int = 0, dim: int = 8) -> Path:
    """A tiny Wan 2.1 VAE (z_dim 16; also decodes HunyuanVideo-shaped latents) for core VAELoader; ``dim`` 96 is
    the real Wan 2.1 VAE's shape (benchmarks/gpu_check)."""
    from comfy.ldm.wan.vae import WanVAE

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    vae = WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], dropout=0.0)
    save_file(random_weights(vae, seed, std=0.05), str(path))
    return path


# ComfyUI's VAE loader builds every Wan 2.2 VAE at the full size (dim 160, dec_dim 256: 705 M parameters) whatever
# the file holds; the tiny one loads only while ``tiny_wan22_vae_sizes`` is active.
TINY_WAN22_VAE = dict(dim=8, dec_dim=16)


def write_wan22_vae(path: Path | str, seed: int = 0) -> Path:
    """A tiny Wan 2.2 VAE (z_dim 48, 16x spatial, 4x temporal): the real ``comfy.ldm.wan.vae2_2`` class."""
    from comfy.ldm.wan.vae2_2 import WanVAE

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    vae = WanVAE(z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], dropout=0.0, **TINY_WAN22_VAE)
    save_file(random_weights(vae, seed, std=0.05), str(path))
    return path


def tiny_wan22_vae_sizes(monkeypatch) -> None:
    """Make ComfyUI's VAE loader build Wan 2.2 VAEs at the tiny sizes (pytest ``monkeypatch``; undone after the
    test). Everything else of the loader (detection, geometry, dtype, patcher) runs as it is."""
    import comfy.ldm.wan.vae2_2 as vae2_2

    full = vae2_2.WanVAE

    class TinySizedWanVAE(full):
        def __init__(self, **config):
            super().__init__(**(config | TINY_WAN22_VAE))

    monkeypatch.setattr(vae2_2, "WanVAE", TinySizedWanVAE)


def lora_targets(family: str, **overrides) -> list[str]:
    """Module paths (``diffusion_model.<path>``) of the 2-D linear weights inside transformer blocks."""
    model = build_diffusion_model(family, **overrides)
    names = []
    for name, tensor in model.state_dict().items():
        if name.endswith(".weight") and tensor.ndim == 2 and "blocks" in name:
            names.append("diffusion_model." + name[: -len(".weight")])
    return names


def random_lora(family: str, rank: int = 4, alpha: float = 4.0, seed: int = 1, std: float = 0.05,
                targets: list[str] | None = None, **overrides) -> dict[str, torch.Tensor]:
    """A LoRA in ComfyUI key format (``<module>.lora_up.weight`` / ``.lora_down.weight`` / ``.alpha``)."""
    model_sd = build_diffusion_model(family, **overrides).state_dict()
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for prefix in targets or lora_targets(family, **overrides):
        out_dim, in_dim = model_sd[prefix[len("diffusion_model."):] + ".weight"].shape
        out[f"{prefix}.lora_up.weight"] = torch.randn(out_dim, rank, generator=gen) * std
        out[f"{prefix}.lora_down.weight"] = torch.randn(rank, in_dim, generator=gen) * std
        out[f"{prefix}.alpha"] = torch.tensor(float(alpha))
    return out


def write_random_lora(family: str, path: Path | str, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(random_lora(family, **kwargs), str(path))
    return path


# A tiny random OpenCLIP in HPSv2's file layout (no HPS/CLIP weights exist in any package).
TINY_HPS_ARCH = "pv-tiny-clip"
TINY_HPS_CFG = {"embed_dim": 32,
                "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
                "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


def register_tiny_hps_config(directory: Path | str) -> str:
    """Make ``pv-tiny-clip`` an OpenCLIP model config (process-wide); returns its name."""
    import open_clip

    path = Path(directory) / f"{TINY_HPS_ARCH}.json"
    path.write_text(json.dumps(TINY_HPS_CFG))
    open_clip.add_model_config(path)
    return TINY_HPS_ARCH


def write_tiny_hps_model_file(path: Path | str, seed: int = 0):
    """A ``{"state_dict": ...}`` .pt file as HPS_v2*_compressed.pt are, for the registered tiny config."""
    from open_clip.model import CLIP

    import open_clip

    torch.manual_seed(seed)
    clip = CLIP(**open_clip.get_model_config(TINY_HPS_ARCH))
    torch.save({"state_dict": clip.state_dict(), "epoch": 3}, str(path))
    return clip


# --- the example workflows on tiny models ------------------------------------------------------------
# The workflows name the official ComfyUI downloads; these tiny files stand in under the same names.
WORKFLOW_FILES = {
    "wan21": ("wan2.1_t2v_1.3B_fp16.safetensors", "wan_2.1_vae.safetensors"),
    "hunyuan_video": ("hunyuan_video_t2v_720p_bf16.safetensors", "hunyuan_video_vae_bf16.safetensors"),
}
# Wan 2.2 A14B's two experts: tiny Wan 2.1-architecture models with two seeds (ComfyUI loads both as WAN21).
WORKFLOW_EXPERTS = {"wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors": 21,
                    "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors": 22}
WORKFLOW_SHRINK = {"steps": 2, "width": 64, "height": 64, "frames": 9, "length": 9,
                   "frames_per_reward": 2}


def install_for_workflows(models_dir: Path | str, scratch: Path | str) -> None:
    """Tiny models under the workflows' file names, the tiny HPS model file, and a style LoRA.

    The insightface pack and the reference photo come from the caller (dev/face_assets.py).
    """
    models = Path(models_dir)
    for family, (unet, vae) in WORKFLOW_FILES.items():
        if not (models / "diffusion_models" / unet).exists():
            write_diffusion_model(family, models / "diffusion_models" / unet)
            write_wan_vae(models / "vae" / vae)
    for name, seed in WORKFLOW_EXPERTS.items():
        if not (models / "diffusion_models" / name).exists():
            write_diffusion_model("wan21", models / "diffusion_models" / name, seed=seed)
    register_tiny_hps_config(scratch)
    (models / "hpsv2").mkdir(parents=True, exist_ok=True)
    write_tiny_hps_model_file(models / "hpsv2" / "HPS_v2.1_compressed.pt")
    write_random_lora("wan21", models / "loras" / "style_lora.safetensors", std=0.1)


# The text encoder loaders' type -> the tiny family whose conditioning width the stand-in gives.
CLIP_TYPE_FAMILY = {"wan": "wan21", "hunyuan_video": "hunyuan_video", "hunyuan_video_15": "hunyuan_video_15",
                    "ltxv": "ltxv", "cogvideox": "cogvideox"}
TINY_STEPS = 8  # sampling steps of the shrunk workflows (fewer stay as they are: the 4-step LoRA graphs)
LATENT_NODES = ("EmptyHunyuanLatentVideo", "Wan22ImageToVideoLatent", "EmptyHunyuanVideo15Latent",
                "EmptyLTXVLatentVideo")


def for_tiny_models(prompt: dict, steps: int | None = None) -> dict:
    """An API prompt of an example workflow, made runnable on the tiny models.

    Text-encoder loaders become the dev CLIP stand-in (no tiny UMT5 / llava / T5 exists) at the width of the family
    the loader's type names, the HPS architecture becomes the tiny one, and sizes and step counts shrink
    (``steps``: training steps, default 2; sampling steps to at most 8, an expert split in proportion).
    """
    import copy

    prompt = copy.deepcopy(prompt)
    clip_types = [n["inputs"].get("type") for n in prompt.values()
                  if n["class_type"] in ("CLIPLoader", "DualCLIPLoader")]
    family = CLIP_TYPE_FAMILY.get(clip_types[0] if clip_types else "wan", "wan21")
    shrink = WORKFLOW_SHRINK | ({"steps": steps} if steps else {})
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] in ("CLIPLoader", "DualCLIPLoader"):
            node["class_type"] = "PersonalVideoDevCLIPStandIn"
            node["inputs"] = {"width": CONTEXT_WIDTH[family], "pooled_width": POOLED_WIDTH[family], "tokens": 16,
                              "attention_mask": family == "ltxv"}  # LTX-Video needs T5's attention mask
        elif node["class_type"] == "PersonalVideoLoadSemanticRewardModel":
            inputs["architecture"] = TINY_HPS_ARCH
        elif node["class_type"] in ("PersonalVideoTrainIdentityAdapter", *LATENT_NODES):
            for key, value in shrink.items():
                if key in inputs and not isinstance(inputs[key], list):
                    inputs[key] = value
            if "sampling_steps" in inputs:
                old, inputs["sampling_steps"] = inputs["sampling_steps"], min(inputs["sampling_steps"], TINY_STEPS)
                if inputs.get("expert_switch_step"):  # 20 steps split at 10 -> 8 split at 4 (same fraction)
                    inputs["expert_switch_step"] = inputs["expert_switch_step"] * inputs["sampling_steps"] // old
        elif node["class_type"] in ("KSampler", "BasicScheduler", "LTXVScheduler"):
            inputs["steps"] = min(inputs["steps"], TINY_STEPS)
        elif node["class_type"] == "KSamplerAdvanced":  # 20 steps split at 10 -> 8 split at 4 (same fraction)
            new = min(inputs["steps"], TINY_STEPS)
            for key in ("start_at_step", "end_at_step"):
                if inputs[key] < inputs["steps"]:
                    inputs[key] = inputs[key] * new // inputs["steps"]
            inputs["steps"] = new
    return prompt
