"""HunyuanVideo: diffusers' separate layers -> ComfyUI's native, fused ones, exactly.

Native HunyuanVideo fuses q/k/v (``double_blocks.N.img_attn.qkv``, ``txt_attn.qkv``) and, in the single blocks,
q/k/v plus the MLP input (``single_blocks.N.linear1``: q, k, v, mlp rows in that order). A LoRA on the members
fuses without approximation: the downs stacked ([n·r, in]), the ups placed block-diagonally ([out, n·r]) with
the rows of each member, so up @ down has each member's own up_i @ down_i in its rows; rank n·r with alpha
n·alpha keeps alpha / rank, hence the scale. A member without an adapter gets zero rows (its block of up is zero).
Everything else is a rename. A module with no native counterpart raises.
"""

from __future__ import annotations

import re

import torch

from ...training.adapter.lora import lora_tensors

# fused native layer -> its members (diffusers names inside the block), in the native row order
DOUBLE_FUSED = {"img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
                "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}
SINGLE_FUSED = {"linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")}
DOUBLE_RENAMES = {"attn.to_out.0": "img_attn.proj", "attn.to_add_out": "txt_attn.proj",
                  "ff.net.0.proj": "img_mlp.0", "ff.net.2": "img_mlp.2", "ff_context.net.0.proj": "txt_mlp.0",
                  "ff_context.net.2": "txt_mlp.2", "norm1.linear": "img_mod.lin", "norm1_context.linear": "txt_mod.lin"}
SINGLE_RENAMES = {"proj_out": "linear2", "norm.linear": "modulation.lin"}
BLOCK_LISTS = {"transformer_blocks": ("double_blocks", DOUBLE_FUSED, DOUBLE_RENAMES),
               "single_transformer_blocks": ("single_blocks", SINGLE_FUSED, SINGLE_RENAMES)}


def native_target(name: str) -> tuple[str, int, tuple[str, ...]]:
    """(native module, member index, the diffusers members fused into it) of diffusers module ``name``; a rename
    has one member. ValueError for a name with no native counterpart."""
    m = re.fullmatch(r"(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)", name)
    if m:
        native_list, fused, renames = BLOCK_LISTS[m.group(1)]
        block, inner = f"{native_list}.{m.group(2)}", m.group(3)
        for native, members in fused.items():
            if inner in members:
                return f"{block}.{native}", members.index(inner), tuple(f"{m.group(1)}.{m.group(2)}.{x}"
                                                                        for x in members)
        if inner in renames:
            return f"{block}.{renames[inner]}", 0, (name,)
    raise ValueError(f"HunyuanVideo LoRA export: module {name!r} has no ComfyUI-native name (known: the double "
                     "and single blocks' attention, MLP and modulation layers); ComfyUI would not load it. Train "
                     "only those layers")


def native_key(name: str) -> str:
    """The native weight key a diffusers module's LoRA lands in (fused members share one)."""
    return f"diffusion_model.{native_target(name)[0]}.weight"


def fuse(members: list[tuple[torch.Tensor, torch.Tensor] | None], out_dims: list[int]) -> tuple[torch.Tensor,
                                                                                                 torch.Tensor]:
    """(up, down) of the fused layer from the members' (up, down) pairs (None: not adapted, zero rows)."""
    present = [p for p in members if p is not None]
    rank, in_dim = present[0][1].shape
    up = torch.zeros(sum(out_dims), rank * len(present))
    downs, row, col = [], 0, 0
    for pair, out_dim in zip(members, out_dims, strict=True):
        if pair is not None:
            up[row:row + out_dim, col:col + rank] = pair[0].detach().float().cpu()
            downs.append(pair[1].detach().float().cpu())
            col += rank
        row += out_dim
    return up, torch.cat(downs)


def export_hunyuan(module_pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], alpha: float,
                   out_features: dict[str, int]) -> dict[str, torch.Tensor]:
    """{diffusers module: (up, down)} -> ComfyUI LoRA tensors; ``out_features``: output width of every member of
    the fused layers touched (diffusers module -> out_features), for the zero rows of unadapted members."""
    groups: dict[str, tuple[str, ...]] = {}
    for name in module_pairs:
        native, _, members = native_target(name)
        groups[native] = members
    fused, alphas = {}, {}
    for native, members in groups.items():
        pairs = [module_pairs.get(member) for member in members]
        if len(members) == 1:
            fused[native] = pairs[0]
        else:
            fused[native] = fuse(pairs, [out_features[member] for member in members])
        alphas[native] = alpha * sum(p is not None for p in pairs)
    return lora_tensors({f"diffusion_model.{native}": pair for native, pair in fused.items()},
                        {f"diffusion_model.{native}": a for native, a in alphas.items()})
