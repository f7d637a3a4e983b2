"""training/adapter/targets.py: which weights get the adapter, without ComfyUI (state-dict key -> shape only).

The same rules on the real tiny models of every family, loaded by ComfyUI: tests/nodes/test_families.py.
"""

import pytest

from personalvideo.training.adapter.targets import FAMILIES, select_targets

D = "diffusion_model."


def hunyuan_weights(single_blocks: int = 1) -> dict[str, tuple[int, ...]]:
    w = {}
    for s in ("img", "txt"):
        b = f"{D}double_blocks.0.{s}"
        w |= {f"{b}_attn.qkv.weight": (384, 128), f"{b}_attn.proj.weight": (128, 128),
              f"{b}_mlp.0.weight": (512, 128), f"{b}_mlp.2.weight": (128, 512),
              f"{b}_mod.lin.weight": (768, 128), f"{b}_attn.norm.query_norm.scale": (128,)}
    for i in range(single_blocks):
        b = f"{D}single_blocks.{i}"
        w |= {f"{b}.linear1.weight": (896, 128), f"{b}.linear2.weight": (128, 640),
              f"{b}.modulation.lin.weight": (384, 128)}
    w[f"{D}txt_in.individual_token_refiner.blocks.0.self_attn.qkv.weight"] = (384, 128)  # text side: never
    w[f"{D}final_layer.linear.weight"] = (64, 128)
    return w


def test_hunyuan_attention_includes_the_single_blocks_fused_layers_and_never_modulation_or_the_refiner():
    t = select_targets("HunyuanVideo", hunyuan_weights(), "attention")
    assert sorted(k[len(D):] for k in t.shapes) == sorted(
        [f"double_blocks.0.{s}_attn.{p}.weight" for s in ("img", "txt") for p in ("qkv", "proj")]
        + ["single_blocks.0.linear1.weight", "single_blocks.0.linear2.weight"])
    assert (t.attention, t.mlp) == (6, 0)
    both = select_targets("HunyuanVideo", hunyuan_weights(), "attention+mlp")
    assert (both.attention, both.mlp) == (6, 4) and len(both.shapes) == 10
    assert both.describe() == "adapted layers: 10 (6 attention, 4 MLP) of HunyuanVideo (layers = attention+mlp)"
    assert t.describe() == "adapted layers: 6 (6 attention) of HunyuanVideo (layers = attention)"


def test_hunyuan_video_15_without_single_blocks_adapts_the_double_blocks_attention():
    t = select_targets("HunyuanVideo15", hunyuan_weights(single_blocks=0), "attention")
    assert t.attention == 4 and t.family == "HunyuanVideo 1.5"


@pytest.mark.parametrize("model_type", ["SD15", "Flux", "GenmoMochi", "WAN21_I2V", "HunyuanVideoI2V", "CosmosT2V"])
def test_a_family_the_trainer_does_not_support_is_refused_naming_it_and_the_supported(model_type):
    with pytest.raises(ValueError) as err:
        select_targets(model_type, hunyuan_weights(), "attention")
    message = str(err.value)
    assert f"got a {model_type} model" in message
    for name in ("Wan 2.1 / 2.2", "HunyuanVideo", "HunyuanVideo 1.5", "CogVideoX", "LTX-Video", *FAMILIES):
        assert name in message


def test_no_matching_layer_is_an_error_not_an_empty_adapter():
    renamed = {k.replace("_attn.", "_attention."): v for k, v in hunyuan_weights(0).items()}
    with pytest.raises(ValueError, match=r"no attention layers found in this HunyuanVideo model"):
        select_targets("HunyuanVideo", renamed, "attention")
    no_mlp = {k: v for k, v in hunyuan_weights().items() if "_mlp." not in k}
    assert select_targets("HunyuanVideo", no_mlp, "attention").attention == 6
    with pytest.raises(ValueError, match=r"no mlp layers found"):
        select_targets("HunyuanVideo", no_mlp, "attention+mlp")


def test_unknown_layers_setting_is_refused():
    with pytest.raises(ValueError, match=r"layers: got 'all'"):
        select_targets("HunyuanVideo", hunyuan_weights(), "all")
