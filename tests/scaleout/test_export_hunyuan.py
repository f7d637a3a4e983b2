"""HunyuanVideo adapters: diffusers' separate q/k/v (and single blocks' MLP input) fused exactly into ComfyUI's
native ``qkv`` / ``linear1``, checked in real ComfyUI on its tiny HunyuanVideo (dev/tiny_models.py).

Compared at the weight level, not by model outputs: the base outputs of diffusers' and ComfyUI's HunyuanVideo
differed by ~5e-2 on converted weights (embeddings, token refiner and patch embedding
matched, the cause was not found), which would hide any LoRA error. ComfyUI applies a LoRA as a weight delta,
so equal deltas mean an equal adapted model up to that base difference. The tiny diffusers transformer is
random (scaleout/tiny.py); its adapter's ups are set to random values (a fresh adapter's are zero).
"""

from __future__ import annotations

import logging

import pytest
import torch

from graphs import MODEL_FILES, install_models, rel_err

DOUBLE = "transformer_blocks.0."
SINGLE = "single_transformer_blocks.0."
# a partial adapter: fused groups with members left out (their rows must be zero), and a rename
PARTIAL = [DOUBLE + "attn.to_q", DOUBLE + "attn.to_v", DOUBLE + "attn.to_add_out", SINGLE + "attn.to_k",
           SINGLE + "proj_mlp", SINGLE + "proj_out"]


def _adapted(names):
    from personalvideo.scaleout import tiny
    from personalvideo.scaleout.peft_adapter import PeftLoRA

    transformer = tiny.hunyuan_transformer()
    params = PeftLoRA(transformer, {n: n + ".weight" for n in names}, rank=4, alpha=2.0, seed=0)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for up, _ in params.pairs().values():
            up.copy_(torch.randn(up.shape, generator=gen) * 0.2)
    return transformer, params


def _all_block_layers():
    from personalvideo.scaleout import tiny
    from personalvideo.scaleout.export import native_targets
    from personalvideo.scaleout.export.hunyuan import native_key

    return list(native_targets(tiny.hunyuan_transformer(), "HunyuanVideo", "attention+mlp", native_key,
                               ("transformer_blocks.", "single_transformer_blocks."))[1])


@pytest.mark.parametrize("which", ["attention+mlp", "partial"])
def test_fused_export_loads_in_comfyui_with_the_peft_deltas(comfy, which, caplog):
    import nodes
    from comfy import lora as comfy_lora

    from personalvideo.scaleout.export.hunyuan import export_hunyuan, native_target

    names = _all_block_layers() if which == "attention+mlp" else PARTIAL
    transformer, params = _adapted(names)
    modules = dict(transformer.named_modules())
    members = {m for n in names for m in native_target(n)[2]}
    tensors = export_hunyuan(params.module_pairs(), params.alpha, {m: modules[m].out_features for m in members})

    install_models(comfy)
    patcher = nodes.UNETLoader().load_unet(MODEL_FILES["hunyuan_video"], "default")[0]
    with caplog.at_level(logging.WARNING):
        patches = comfy_lora.load_lora(tensors, comfy_lora.model_lora_keys_unet(patcher.model, {}))
    assert "lora key not loaded" not in caplog.text
    natives = {native_target(n)[0] for n in names}
    assert len(patches) == len(natives) == sum(k.endswith(".lora_up.weight") for k in tensors)
    if which == "attention+mlp":  # every layer of both blocks: 2 qkv + 2 proj + 4 mlp, linear1 + linear2
        assert len(natives) == 10 and "single_blocks.0.linear1" in natives

    state = patcher.model.state_dict()
    pairs = params.module_pairs()
    for native in natives:
        key = f"diffusion_model.{native}.weight"
        weight = state[key].float()
        delta = comfy_lora.calculate_weight([(1.0, patches[key], 1.0, None, None)], weight.clone(), key) - weight
        member_names = next(native_target(n)[2] for n in names if native_target(n)[0] == native)
        want = torch.cat([modules[m].get_delta_weight("identity") if m in pairs
                          else torch.zeros(modules[m].out_features, modules[m].in_features) for m in member_names])
        assert delta.shape == want.shape and rel_err(delta, want) < 1e-6, native
        if which == "partial" and native.endswith(("qkv", "linear1")):
            rows = [modules[m].out_features for m in member_names]
            for block, m in zip(delta.split(rows), member_names):
                assert (float(block.abs().max()) == 0.0) == (m not in pairs), m


def test_fusion_keeps_the_scale_and_refuses_unknown_modules():
    from personalvideo.scaleout.export.hunyuan import export_hunyuan

    names = [DOUBLE + "attn.to_q", DOUBLE + "attn.to_k", DOUBLE + "attn.to_v"]
    _, params = _adapted(names)
    out = export_hunyuan(params.module_pairs(), params.alpha, {n: 128 for n in names})
    prefix = "diffusion_model.double_blocks.0.img_attn.qkv"
    assert out[prefix + ".lora_down.weight"].shape == (12, 128) and out[prefix + ".lora_up.weight"].shape == (384, 12)
    assert float(out[prefix + ".alpha"]) == 6.0  # 3 x alpha 2: alpha / rank unchanged
    with pytest.raises(ValueError, match="'x_embedder.proj'.*no ComfyUI-native name"):
        export_hunyuan({"x_embedder.proj": (torch.zeros(2, 1), torch.zeros(1, 2))}, 1.0, {})
