"""Tiny random models under the file names of the family and speed-LoRA workflows (dev/family_workflows.py,
dev/make_workflows.py), so the tests run those files as they are, on ComfyUI's own classes at tiny sizes.

Wan 2.2 TI2V-5B: a tiny WanModel with 48 latent channels (core UNETLoader detects it as WAN22_T2V, as the real
file) and a tiny Wan 2.2 VAE; HunyuanVideo 1.5, LTX-Video (one checkpoint with its VAE) and CogVideoX (only where
this ComfyUI has it): dev/tiny_families.py; the lightx2v 4-step LoRAs: random LoRAs on every block linear (a
stand-in: no small real distillation LoRA exists). VAEs that ComfyUI's loader builds at a fixed full size load
inside ``tiny_vae_sizes``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from . import tiny_families, tiny_models

DIFFUSION_MODELS = {"wan22_5b": "wan2.2_ti2v_5B_fp16.safetensors",
                    "hunyuan_video_15": "hunyuanvideo1.5_720p_t2v_fp16.safetensors",
                    "cogvideox": "cogvideox_5b_t2v_bf16.safetensors"}
VAES = {"wan22_5b": "wan2.2_vae.safetensors", "hunyuan_video_15": "hunyuanvideo15_vae_fp16.safetensors",
        "cogvideox": "cogvideox_vae.safetensors"}
LTXV_CHECKPOINT = "ltx-video-2b-v0.9.safetensors"
SPEED_LORAS = {"wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors": 41,
               "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors": 42}


def install(models_dir: Path | str) -> None:
    """Write the tiny files (once) into ``models_dir``; CogVideoX only where this ComfyUI has its model class."""
    models = Path(models_dir)
    for family, name in DIFFUSION_MODELS.items():
        path = models / "diffusion_models" / name
        if path.exists() or (family == "cogvideox" and not tiny_families.available(family)):
            continue
        if family == "wan22_5b":
            tiny_models.write_diffusion_model("wan21", path, in_dim=48, out_dim=48)
            tiny_models.write_wan22_vae(models / "vae" / VAES[family])
        else:
            tiny_models.write_diffusion_model(family, path)
            tiny_families.write_family_vae(family, models / "vae" / VAES[family])
    if not (models / "checkpoints" / LTXV_CHECKPOINT).exists():
        tiny_families.write_ltxv_checkpoint(models / "checkpoints" / LTXV_CHECKPOINT)
    for name, seed in SPEED_LORAS.items():
        if not (models / "loras" / name).exists():
            tiny_models.write_random_lora("wan21", models / "loras" / name, rank=8, alpha=8.0, seed=seed, std=0.08)


@contextlib.contextmanager
def tiny_vae_sizes(prompt: dict):
    """While active, the VAE loader builds the VAEs this API prompt loads at the tiny files' sizes."""
    names = {n["inputs"].get("vae_name") for n in prompt.values() if n["class_type"] == "VAELoader"}
    with contextlib.ExitStack() as stack:
        for family, name in VAES.items():
            if name in names:
                stack.enter_context(tiny_families.tiny_vae_sizes(family))
        yield
