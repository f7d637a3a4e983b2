"""HunyuanVideo 1.5, LTX-Video and CogVideoX in real ComfyUI: tiny models of ComfyUI's own classes with random
weights, loaded by core loaders as users load them (tests/families.py), and the adapter targets of every family.

Feature detection: CogVideoX exists in ComfyUI 0.33, not in 0.3.75; its cases run only where this ComfyUI has its
model class (``families.AVAILABLE``) and are reported as skips, with the reason, elsewhere;
``test_cogvideox_is_there_exactly_when_comfyui_has_it`` runs on both. Stand-ins, said plainly: the text encoder
(dev CLIP stand-in: no tiny T5-XXL / Qwen2.5-VL exists); the face models are the real small w600k_mbf / SCRFD
at detection threshold 0.05 (a random model draws no faces, see test_trainer_comfy.py); LoRAs are random.
"""

from __future__ import annotations

import pytest
import torch

import families
from graphs import MODEL_FILES, pack_module, rel_err

FAMILIES = families.CASES  # every family: those this ComfyUI lacks are skips saying why


@pytest.fixture(scope="module")
def rt(comfy):
    return families.install_all(comfy)


@pytest.fixture(scope="module")
def loaded(rt):
    """{family: (MODEL, VAE, CLIP stand-in)} as the loader nodes return them."""
    return families.load_all(rt)


def test_cogvideox_is_there_exactly_when_comfyui_has_it(rt):
    import comfy.supported_models

    from dev import tiny_families

    has_it = hasattr(comfy.supported_models, "CogVideoX_T2V")
    assert tiny_families.available("cogvideox") == has_it == ("cogvideox" in families.AVAILABLE)


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_as_its_family_and_the_vae_gives_its_geometry(loaded, family):
    geometry = pack_module("nodes.runtime.latent_geometry")
    model, vae, _ = loaded[family]
    assert pack_module("nodes.runtime.model").model_family(model) == families.MODEL_TYPE[family]
    g = geometry.latent_geometry(model, vae)
    assert (g.channels, g.spatial, g.temporal) == families.GEOMETRY[family]
    g.check_video_size(families.SIZE, families.SIZE, families.FRAMES[family])
    bad_frames = families.FRAMES[family] + 2  # 4k+3 / 8k+3
    with pytest.raises(ValueError, match=rf"frames: got {bad_frames}, expected {g.temporal}k\+1"):
        g.check_video_size(families.SIZE, families.SIZE, bad_frames)
    odd = g.spatial + g.spatial // 2
    with pytest.raises(ValueError, match=rf"width: got {odd}, expected a multiple of {g.spatial}"):
        g.check_video_size(odd, families.SIZE, families.FRAMES[family])


# Native names of every family's attention (and MLP) layers in the tiny models: block index N.
ATTENTION = {
    "wan21": [f"blocks.N.{a}.{p}" for a in ("self_attn", "cross_attn") for p in "qkvo"],
    "hunyuan_video": [f"double_blocks.N.{s}_attn.{p}" for s in ("img", "txt") for p in ("qkv", "proj")]
    + ["single_blocks.N.linear1", "single_blocks.N.linear2"],
    "hunyuan_video_15": [f"double_blocks.N.{s}_attn.{p}" for s in ("img", "txt") for p in ("qkv", "proj")],
    "ltxv": [f"transformer_blocks.N.attn{i}.{p}" for i in (1, 2) for p in ("to_q", "to_k", "to_v", "to_out.0")],
    "cogvideox": [f"blocks.N.{p}" for p in ("q", "k", "v", "attn_out")],
}
MLP = {"wan21": ["blocks.N.ffn.0", "blocks.N.ffn.2"],
       "hunyuan_video": [f"double_blocks.N.{s}_mlp.{i}" for s in ("img", "txt") for i in (0, 2)],
       "ltxv": ["transformer_blocks.N.ff.net.0.proj", "transformer_blocks.N.ff.net.2"],
       "cogvideox": ["blocks.N.ff_proj", "blocks.N.ff_out"]}
MLP["hunyuan_video_15"] = MLP["hunyuan_video"]


def _model(rt, loaded, family):
    if family in loaded:
        return loaded[family][0]
    import nodes

    return nodes.UNETLoader().load_unet(MODEL_FILES[family], "default")[0]


def _generic(keys):
    import re

    return sorted({re.sub(r"\.\d+\.", ".N.", k[len("diffusion_model."): -len(".weight")], count=1) for k in keys})


@pytest.mark.parametrize("family", ["wan21", "hunyuan_video", *FAMILIES])
def test_adapter_targets_are_the_familys_attention_by_native_names(rt, loaded, family):
    runtime_model = pack_module("nodes.runtime.model")
    model = _model(rt, loaded, family)
    attention = runtime_model.adapter_targets(model, "attention")
    both = runtime_model.adapter_targets(model, "attention+mlp")
    assert _generic(attention.shapes) == sorted(ATTENTION[family])
    assert _generic(set(both.shapes) - set(attention.shapes)) == sorted(MLP[family])
    assert both.attention == attention.attention == len(attention.shapes)
    assert attention.describe().startswith(f"adapted layers: {len(attention.shapes)} ({attention.attention} "
                                           "attention) of ")
    assert f"{both.attention} attention, {both.mlp} MLP" in both.describe()


def test_an_unsupported_family_is_refused_by_name(rt):
    """A Wan 2.1 model whose config class ComfyUI named otherwise (as for an image-to-video variant) is refused."""
    import nodes

    model = nodes.UNETLoader().load_unet(MODEL_FILES["wan21"], "default")[0]  # a fresh load, not shared
    renamed = type("WAN21_Vace", (type(model.model.model_config),), {})
    model.model.model_config = renamed(model.model.model_config.unet_config)
    with pytest.raises(ValueError, match=r"got a WAN21_Vace model; .*HunyuanVideo 1.5, .*LTX-Video"):
        pack_module("nodes.runtime.model").adapter_targets(model, "attention")


@pytest.mark.parametrize("family", FAMILIES)
def test_apply_node_at_gate_075_equals_the_two_sampler_reference(rt, family):
    lora = f"identity_{family}.safetensors"
    out = families.latent(rt, family, *families.sample(family, adapter=lora))
    base = families.latent(rt, family, *families.sample(family))
    ref = families.two_sampler_reference(rt, family, lora)
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) <= 1e-5, rel_err(out, ref)
    assert rel_err(out, base) > 1e-3, "the adapter must change the result after the gate"
