"""Tiny HunyuanVideo 1.5, LTX-Video and CogVideoX models and VAEs from ComfyUI's own classes, random weights.

As ``dev/tiny_models.py`` for Wan and HunyuanVideo: files that core UNETLoader / VAELoader load and detect as the
family, exactly as the real checkpoints. Where ComfyUI's VAE loader builds a VAE at a fixed full size whatever
the file holds (HunyuanVideo 1.5's: block channels 128..1024; CogVideoX's: 128..512, about 215 M parameters), the
tiny file loads only inside ``tiny_vae_sizes(family)``, which makes the loader build ComfyUI's own class at the
file's tiny size; everything else of the loader (detection, geometry, dtype, patcher) runs as it is. LTX-Video
comes as its releases do, one checkpoint with the model and the VAE whose config is in the file's metadata, for
core CheckpointLoaderSimple (which reads that config on every version; 0.3.75's VAELoader does not), so it needs
no patch. CogVideoX exists only in newer ComfyUI (0.33 has it, 0.3.75 not): ``available``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from pathlib import Path
from unittest import mock

import torch
from safetensors.torch import save_file

from .tiny_weights import random_weights

# Where each family's model class lives in ComfyUI (feature detection: an older ComfyUI lacks some).
MODEL_CLASS = {"hunyuan_video_15": ("comfy.ldm.hunyuan_video.model", "HunyuanVideo"),
               "ltxv": ("comfy.ldm.lightricks.model", "LTXVModel"),
               "cogvideox": ("comfy.ldm.cogvideo.model", "CogVideoXTransformer3DModel")}


def available(family: str) -> bool:
    """Whether this ComfyUI has ``family``'s model class (CogVideoX arrived after 0.3.75)."""
    module, name = MODEL_CLASS[family]
    try:
        return hasattr(importlib.import_module(module), name)
    except ImportError:
        return False


def build_family_model(family: str, ops, **overrides) -> torch.nn.Module:
    module, name = MODEL_CLASS[family]
    cls = getattr(importlib.import_module(module), name)
    if family == "hunyuan_video_15":
        import dataclasses

        from comfy.ldm.hunyuan_video.model import HunyuanVideoParams

        # HunyuanVideo 1.5 as ComfyUI detects it: a vision_in projection of width 1152, 32-channel latent plus 32
        # image-conditioning channels and a mask (65 in), patch 1, cond-type embedding; double-stream blocks only.
        params = dict(in_channels=65, out_channels=32, vec_in_dim=None, context_in_dim=768, hidden_size=128,
                      mlp_ratio=4.0, num_heads=1, depth=2, depth_single_blocks=0, axes_dim=[16, 56, 56],
                      theta=256, patch_size=[1, 1, 1], qkv_bias=True, guidance_embed=False, byt5=False,
                      meanflow=False, use_cond_type_embedding=True, vision_in_dim=1152)
        for f in dataclasses.fields(HunyuanVideoParams):
            params.setdefault(f.name, False if f.type in (bool, "bool") else None)
        return cls(image_model="hunyuan_video", operations=ops, **(params | overrides))
    if family == "ltxv":
        # The detector fixes 32 heads (head dim = to_k rows / 32) and the caption width (T5-XXL, 4096).
        params = dict(in_channels=128, cross_attention_dim=128, attention_head_dim=4, num_attention_heads=32,
                      caption_channels=4096, num_layers=2)
        return cls(operations=ops, **(params | overrides))
    if family == "cogvideox":
        # The detector fixes head dim 64 (heads = width / 64); rotary positions as CogVideoX-5B (ConsisID's base).
        params = dict(num_attention_heads=1, attention_head_dim=64, in_channels=16, out_channels=16,
                      time_embed_dim=64, text_embed_dim=4096, num_layers=2, patch_size=2,
                      use_rotary_positional_embeddings=True, use_learned_positional_embeddings=False)
        return cls(operations=ops, **(params | overrides))
    raise ValueError(f"family: got {family!r}, expected one of {tuple(MODEL_CLASS)}")


# --- VAEs ----------------------------------------------------------------------------------------------
# The deepest stage (last) takes the 32-channel latent whole (decoder) and gives its 2x32 moments (encoder) by
# channel grouping: it needs a multiple of 64 channels; the full-resolution stages stay narrow.
TINY_HUNYUAN15_VAE = dict(block_out_channels=[16, 16, 16, 16, 64], num_res_blocks=1)
TINY_COGVIDEOX_VAE = dict(block_out_channels=(32, 32, 32, 32), layers_per_block=1)
# LTX-Video's VAE config as its files carry it in the safetensors metadata: 32x spatial (patch 4, three 2x
# stages), 8x temporal, 128 latent channels, one residual layer per stage.
TINY_LTXV_VAE = {"_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3,
                 "latent_channels": 128, "blocks": [["res_x", 1], ["compress_all", 1], ["compress_all", 1],
                                                    ["compress_all", 1], ["res_x", 1]],
                 "scaling_factor": 1.0, "norm_layer": "pixel_norm", "patch_size": 4, "latent_log_var": "uniform",
                 "use_quant_conv": False, "causal_decoder": False}


def _hunyuan15_vae_parts(**sizes):
    from comfy.ldm.hunyuan_video.vae_refiner import Decoder, Encoder

    config = {"in_channels": 3, "out_channels": 3, "ffactor_spatial": 16, "ffactor_temporal": 4,
              "downsample_match_channel": True, "upsample_match_channel": True, "z_channels": 32} | sizes
    return Encoder(**config), Decoder(**config)


def write_family_vae(family: str, path: Path | str, seed: int = 0) -> Path:
    """A tiny VAE of ``family``'s own class that core VAELoader loads (inside ``tiny_vae_sizes(family)``).
    LTX-Video's VAE comes inside its checkpoint instead (``write_ltxv_checkpoint``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if family == "hunyuan_video_15":
        encoder, decoder = _hunyuan15_vae_parts(**TINY_HUNYUAN15_VAE)
        sd = {f"encoder.{k}": v for k, v in random_weights(encoder, seed, std=0.05).items()}
        sd |= {f"decoder.{k}": v for k, v in random_weights(decoder, seed + 1, std=0.05).items()}
    elif family == "cogvideox":
        from comfy.ldm.cogvideo.vae import AutoencoderKLCogVideoX

        sd = random_weights(AutoencoderKLCogVideoX(latent_channels=16, **TINY_COGVIDEOX_VAE), seed, std=0.05)
    else:
        raise ValueError(f"family: got {family!r}, expected hunyuan_video_15 or cogvideox (LTX-Video: "
                         "write_ltxv_checkpoint)")
    save_file(sd, str(path))
    return path


def write_ltxv_checkpoint(path: Path | str, seed: int = 0) -> Path:
    """A tiny LTX-Video checkpoint as LTX-Video's releases are (model and VAE in one file, the VAE's config in
    the metadata) for core CheckpointLoaderSimple; no text encoder inside (the graph's CLIPLoader gives it)."""
    from comfy.ldm.lightricks.vae.causal_video_autoencoder import VideoVAE

    import comfy.ops

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    vae = random_weights(VideoVAE(config=TINY_LTXV_VAE), seed + 1, std=0.05)
    for key in vae:  # latent statistics: identity (mean 0, std 1)
        if key.startswith("per_channel_statistics."):
            vae[key] = torch.ones_like(vae[key]) if "std" in key else torch.zeros_like(vae[key])
    model = build_family_model("ltxv", comfy.ops.manual_cast)
    sd = {f"model.diffusion_model.{k}": v for k, v in random_weights(model, seed).items()}
    sd |= {f"vae.{k}": v for k, v in vae.items()}
    save_file(sd, str(path), metadata={"config": json.dumps({"vae": TINY_LTXV_VAE})})
    return path


@contextlib.contextmanager
def tiny_vae_sizes(family: str):
    """While active, ComfyUI's VAE loader builds ``family``'s VAE class at the tiny file's sizes (a no-op for
    families whose loader reads the sizes from the file)."""
    if family == "hunyuan_video_15":
        import comfy.ldm.hunyuan_video.vae_refiner as refiner

        patches = [mock.patch.object(refiner, name, _sized(getattr(refiner, name), TINY_HUNYUAN15_VAE))
                   for name in ("Encoder", "Decoder")]
    elif family == "cogvideox":
        import comfy.ldm.cogvideo.vae as cog

        patches = [mock.patch.object(cog, "AutoencoderKLCogVideoX",
                                     _sized(cog.AutoencoderKLCogVideoX, TINY_COGVIDEOX_VAE))]
    elif family == "wan22_5b":  # Wan 2.2's VAE (TI2V-5B): tiny_models.write_wan22_vae
        import comfy.ldm.wan.vae2_2 as vae2_2

        from .tiny_models import TINY_WAN22_VAE

        patches = [mock.patch.object(vae2_2, "WanVAE", _sized(vae2_2.WanVAE, TINY_WAN22_VAE))]
    else:
        patches = []
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        yield


def _sized(cls, sizes: dict):
    class TinySized(cls):
        def __init__(self, *args, **config):
            super().__init__(*args, **(config | sizes))

    TinySized.__name__ = cls.__name__
    return TinySized
