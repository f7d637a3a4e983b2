"""AnimateDiff adapters: the spatial UNet layers in kohya names, loaded by ComfyUI's SD1.5 LoRA loader.

ComfyUI's SD1.5 model class (comfy.supported_models.SD15, its BaseModel and key map) built with a tiny UNet config
of the same layout as the tiny diffusers UNetMotionModel (scaleout/tiny.py: 2 levels, 2 res blocks, attention at
level 0 and in the middle; random weights). ComfyUI's loader would not detect a tiny SD1.5 UNet from a file
(its detection fixes 320 channels), so the model is built from the config directly. Core ComfyUI has no
AnimateDiff: the motion modules are not exported (refused), only the spatial layers.
"""

from __future__ import annotations

import logging

import pytest
import torch

from graphs import rel_err


def _tiny_sd15(comfy):
    import comfy.supported_models as supported  # noqa: F401  (the fixture boots ComfyUI first)

    config = {"use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 32,
              "use_spatial_transformer": True, "legacy": False, "adm_in_channels": None, "num_res_blocks": [2, 2],
              "channel_mult": [1, 2], "transformer_depth": [1, 1, 0, 0], "transformer_depth_output": [1, 1, 1, 0, 0, 0],
              "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 32, "num_heads": 4,
              "use_temporal_attention": False, "use_temporal_resblock": False}
    return supported.SD15(config).get_model({})


@pytest.fixture(scope="module")
def adapted():
    from personalvideo.scaleout.export.animatediff import adapted_spatial_layers
    from personalvideo.scaleout.peft_adapter import PeftLoRA
    from personalvideo.scaleout import tiny

    unet = tiny.animatediff_parts().unet
    names = adapted_spatial_layers(unet, "attention+mlp")
    params = PeftLoRA(unet, {n: n + ".weight" for n in names}, rank=4, alpha=2.0, seed=0)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for up, _ in params.pairs().values():
            up.copy_(torch.randn(up.shape, generator=gen) * 0.2)
    return unet, params


def test_every_spatial_key_loads_on_an_sd15_unet_with_the_peft_deltas(comfy, adapted, caplog):
    from comfy import lora as comfy_lora

    from personalvideo.scaleout.export.animatediff import export_animatediff

    unet, params = adapted
    assert not any("motion_modules" in n for n in params.module_pairs()), "motion modules are never adapted"
    assert any(n.startswith("mid_block.") for n in params.module_pairs())
    tensors = export_animatediff(params.module_pairs(), params.alpha)
    model = _tiny_sd15(comfy)
    key_map = comfy_lora.model_lora_keys_unet(model, {})
    with caplog.at_level(logging.WARNING):
        patches = comfy_lora.load_lora(tensors, key_map)
    assert "lora key not loaded" not in caplog.text
    assert len(patches) == len(params.keys) == 60  # 6 transformer blocks x (8 attention + 2 MLP)
    state = model.state_dict()
    modules = dict(unet.named_modules())
    for name in params.module_pairs():
        key = key_map["lora_unet_" + name.replace(".", "_")]
        weight = torch.zeros(state[key].shape)  # the model was built without weights (uninitialised memory)
        delta = comfy_lora.calculate_weight([(1.0, patches[key], 1.0, None, None)], weight, key)
        assert rel_err(delta, modules[name].get_delta_weight("identity")) < 1e-6, name


def test_motion_and_unmapped_layers_are_refused():
    from personalvideo.scaleout.export.animatediff import export_animatediff, kohya_name

    assert kohya_name("mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0") == \
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0"
    pair = (torch.zeros(2, 1), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="motion-module layer; core ComfyUI has no AnimateDiff"):
        export_animatediff({"down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q": pair}, 1.0)
    with pytest.raises(ValueError, match="'time_embedding.linear_1' is not a spatial"):
        export_animatediff({"time_embedding.linear_1": pair}, 1.0)
