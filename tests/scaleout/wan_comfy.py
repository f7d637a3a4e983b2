"""The tiny diffusers Wan (scaleout/tiny.py) as ComfyUI files: its transformer and VAE weights renamed to
ComfyUI's native keys with diffusers' own single-file converters (which map native -> diffusers: applied to the
native key names of ComfyUI's tiny model classes, they give the exact key correspondence, checked 1:1 here)."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from dev import tiny_models


def native_state_dict(diffusers_sd: dict[str, torch.Tensor], native_keys, to_diffusers) -> dict[str, torch.Tensor]:
    """``diffusers_sd`` under ComfyUI's ``native_keys``; ``to_diffusers``: diffusers' native -> diffusers converter."""
    names = to_diffusers({k: k for k in native_keys})  # {diffusers key: native key}
    assert sorted(names) == sorted(diffusers_sd), sorted(set(names) ^ set(diffusers_sd))[:5]
    return {native: diffusers_sd[key].detach().clone().contiguous() for key, native in names.items()}


def write_comfy_wan(pipe, comfy, name: str, transformer=None) -> tuple[str, str]:
    """Write ``pipe``'s transformer (or ``transformer``) and VAE as ComfyUI files; returns (unet name, vae name)."""
    from comfy.ldm.wan.vae import WanVAE
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers, convert_wan_vae_to_diffusers

    transformer = transformer or pipe.transformer
    base = {k: v for k, v in transformer.state_dict().items() if "lora_" not in k}
    base = {k.replace(".base_layer.", "."): v for k, v in base.items()}  # peft wraps adapted layers
    native = native_state_dict(base, tiny_models.build_diffusion_model("wan21").state_dict(),
                               convert_wan_transformer_to_diffusers)
    save_file(native, str(comfy.model_dir("diffusion_models") / f"{name}.safetensors"))
    vae_keys = WanVAE(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                      temperal_downsample=[False, True, True], dropout=0.0).state_dict()
    vae = native_state_dict(pipe.vae.state_dict(), vae_keys, convert_wan_vae_to_diffusers)
    save_file(vae, str(comfy.model_dir("vae") / f"{name}_vae.safetensors"))
    return f"{name}.safetensors", f"{name}_vae.safetensors"
