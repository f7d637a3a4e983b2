"""Wan: diffusers module names -> ComfyUI's native ones (a rename; the layers are the same).

The table is the inverse of diffusers' own single-file converter (convert_wan_transformer_to_diffusers) for the
linear layers; diffusers' ``WanPipeline.load_lora_weights`` reads the native files back. Names without a native
counterpart raise: ComfyUI would skip them with only a log line.
"""

from __future__ import annotations

import re

import torch

from ...training.adapter.lora import lora_tensors

_BLOCK = r"blocks\.(\d+)\."
RENAMES = [  # (diffusers module, native module); \1 = block index
    (_BLOCK + r"attn1\.to_q", r"blocks.\1.self_attn.q"),
    (_BLOCK + r"attn1\.to_k", r"blocks.\1.self_attn.k"),
    (_BLOCK + r"attn1\.to_v", r"blocks.\1.self_attn.v"),
    (_BLOCK + r"attn1\.to_out\.0", r"blocks.\1.self_attn.o"),
    (_BLOCK + r"attn2\.to_q", r"blocks.\1.cross_attn.q"),
    (_BLOCK + r"attn2\.to_k", r"blocks.\1.cross_attn.k"),
    (_BLOCK + r"attn2\.to_v", r"blocks.\1.cross_attn.v"),
    (_BLOCK + r"attn2\.to_out\.0", r"blocks.\1.cross_attn.o"),
    (_BLOCK + r"attn2\.add_k_proj", r"blocks.\1.cross_attn.k_img"),
    (_BLOCK + r"attn2\.add_v_proj", r"blocks.\1.cross_attn.v_img"),
    (_BLOCK + r"ffn\.net\.0\.proj", r"blocks.\1.ffn.0"),
    (_BLOCK + r"ffn\.net\.2", r"blocks.\1.ffn.2"),
    (r"condition_embedder\.time_embedder\.linear_1", "time_embedding.0"),
    (r"condition_embedder\.time_embedder\.linear_2", "time_embedding.2"),
    (r"condition_embedder\.text_embedder\.linear_1", "text_embedding.0"),
    (r"condition_embedder\.text_embedder\.linear_2", "text_embedding.2"),
    (r"condition_embedder\.time_proj", "time_projection.1"),
    (r"proj_out", "head.head"),
]


def native_module(name: str) -> str:
    """``blocks.0.attn1.to_q`` -> ``blocks.0.self_attn.q``; ValueError for a name with no native counterpart."""
    for pattern, native in RENAMES:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, native, name)
    raise ValueError(f"Wan LoRA export: module {name!r} has no ComfyUI-native name (known: attention q/k/v/o, "
                     "k_img/v_img, ffn, time/text embeddings, proj_out); ComfyUI would not load it. Train only "
                     "those layers")


def native_key(name: str) -> str:
    """The ComfyUI weight key of diffusers module ``name`` (``diffusion_model.<native>.weight``)."""
    return f"diffusion_model.{native_module(name)}.weight"


def export_wan(module_pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], alpha: float) -> dict[str, torch.Tensor]:
    """{diffusers module: (up, down)} -> ComfyUI LoRA tensors (``diffusion_model.<native>.lora_up.weight``, ...)."""
    return lora_tensors({f"diffusion_model.{native_module(n)}": pair for n, pair in module_pairs.items()}, alpha)
