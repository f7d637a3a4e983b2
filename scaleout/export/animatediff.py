"""AnimateDiff: the spatial (SD1.5) UNet layers in kohya names, which ComfyUI's SD1.5 loader maps.

``down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`` -> ``lora_unet_down_blocks_0_attentions_0_
transformer_blocks_0_attn1_to_q`` (ComfyUI's key map builds these from its UNet config). Motion modules are not
exported: core ComfyUI has no AnimateDiff, so no loader would read them; the backend never adapts them and
this export refuses them, as any other layer without a kohya name the SD1.5 loader maps.
"""

from __future__ import annotations

import re

import torch

from ...training.adapter.lora import lora_tensors

_ATTENTIONS = r"(down_blocks\.\d+\.attentions\.\d+|up_blocks\.\d+\.attentions\.\d+|mid_block\.attentions\.0)"
SPATIAL = re.compile(_ATTENTIONS + r"\.transformer_blocks\.\d+\.(attn1\.(to_q|to_k|to_v|to_out\.0)|"
                                   r"attn2\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.0\.proj|ff\.net\.2)")


def kohya_name(name: str) -> str:
    """The kohya LoRA name of a spatial UNet layer; ValueError for motion modules and unmapped layers."""
    if "motion_modules" in name:
        raise ValueError(f"AnimateDiff LoRA export: {name!r} is a motion-module layer; core ComfyUI has no "
                         "AnimateDiff, so no loader would read it. Train the spatial layers only")
    if not SPATIAL.fullmatch(name):
        raise ValueError(f"AnimateDiff LoRA export: module {name!r} is not a spatial attention/MLP layer that "
                         "ComfyUI's SD1.5 loader maps; train only those layers")
    return "lora_unet_" + name.replace(".", "_")


def adapted_spatial_layers(unet: torch.nn.Module, layers: str) -> list[str]:
    """The spatial transformer layers to adapt: attention projections, or those and the MLPs (never motion)."""
    names = []
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and "motion_modules" not in name and SPATIAL.fullmatch(name):
            if ".attn" in name or layers == "attention+mlp":
                names.append(name)
    return names


def export_animatediff(module_pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], alpha: float):
    """{diffusers module: (up, down)} -> kohya-named LoRA tensors (``lora_unet_....lora_up.weight``, ...)."""
    return lora_tensors({kohya_name(n): pair for n, pair in module_pairs.items()}, alpha)
