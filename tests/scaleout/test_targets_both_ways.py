"""Both trainers adapt the same layers: one rule (training/adapter/targets.py) on ComfyUI's native names.

For each family the node side (the trainer node's targets on ComfyUI's model) and the scale-out trainer (its
diffusers model, its export) build the adapter with the default layers on tiny models of one architecture
(dev/tiny_models.py and scaleout/tiny.py have the same widths and blocks). The scale-out adapter is compared as
ComfyUI applies it: its file loaded onto the ComfyUI model through core's LoRA key map. Before the rule was shared,
the scale-out HunyuanVideo adapter left out the single-stream blocks' fused linear1/linear2.
"""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from graphs import MODEL_FILES, expert_file, install_experts, pack_module

CASES = {  # case -> (ModelSpec keywords, the ComfyUI file of the same architecture)
    "wan": (dict(family="wan"), MODEL_FILES["wan21"]),
    "wan_a14b": (dict(family="wan", expert_boundary=0.875), expert_file("low_noise")),  # the trained expert
    "hunyuan_video": (dict(family="hunyuan_video"), MODEL_FILES["hunyuan_video"]),
}


@pytest.mark.parametrize("case", CASES)
def test_both_trainers_adapt_the_same_native_weights(comfy, case, tmp_path):
    import nodes
    from comfy import lora as comfy_lora

    from personalvideo.scaleout.backends import ModelSpec, build_backend
    from personalvideo.training.loop.trainer import TrainSettings

    spec_keywords, comfy_file = CASES[case]
    install_experts(comfy)
    patcher = nodes.UNETLoader().load_unet(comfy_file, "default")[0]
    node_side = set(pack_module("nodes.runtime.model").adapter_targets(patcher, "attention").shapes)

    spec = ModelSpec(tiny=True, width=16, height=16, num_frames=5, **spec_keywords)  # layers: the default
    model = build_backend(spec, TrainSettings(rank=2, alpha=2.0, sampling_steps=4))
    exported = load_file(model.export_comfyui(tmp_path / f"{case}.safetensors"))
    patches = comfy_lora.load_lora(exported, comfy_lora.model_lora_keys_unet(patcher.model, {}), log_missing=False)
    scale_out = {key for key in patches if isinstance(key, str)}

    assert scale_out == node_side
    assert len(scale_out) * 3 == len(exported)  # every exported pair lands on a weight (up, down, alpha each)
    if case == "hunyuan_video":
        assert {"diffusion_model.single_blocks.0.linear1.weight", "diffusion_model.single_blocks.0.linear2.weight",
                "diffusion_model.double_blocks.0.img_attn.qkv.weight"} <= scale_out
