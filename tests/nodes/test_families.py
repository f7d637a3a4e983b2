"""HunyuanVideo 1.5, LTX-Video and CogVideoX in real ComfyUI: tiny models of ComfyUI's own classes with random
weights, loaded by core loaders as users load them (tests/families.py), and the adapter targets of every family.

Feature detection: CogVideoX exists in ComfyUI 0.33, not in 0.3.75; its cases are generated only where this
ComfyUI has its model class (``families.AVAILABLE``), and ``test_cogvideox_is_there_exactly_when_comfyui_has_it``
runs on both. Stand-ins, said plainly: the text encoder (dev CLIP stand-in: no tiny T5-XXL / Qwen2.5-VL exists);
the face models are the real small w600k_mbf / SCRFD at detection threshold 0.05 (a random model draws no faces,
see test_trainer_comfy.py); LoRAs are random.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch

import families
from dev.face_assets import make_pack, photo_path
from graphs import Graph, MODEL_FILES, install_models, pack_module, rel_err

STEPS, GATE, CFG, SEED, PROMPT, NEGATIVE = 8, math.ceil(0.75 * 8), 3.0, 7, "a man dancing in the rain", "blurry"
FAMILIES = families.AVAILABLE
PACK = "vectron_s"


@pytest.fixture(scope="module")
def rt(comfy):
    install_models(comfy)
    for family in FAMILIES:
        families.install(comfy, family)
    return comfy


@pytest.fixture(scope="module")
def loaded(rt):
    """{family: (MODEL, VAE, CLIP stand-in)} as the loader nodes return them."""
    out = {}
    for family in FAMILIES:
        g = Graph()
        model, vae = families.loaders(g, family)
        g.capture(model, "model")
        g.capture(vae, "vae")
        g.capture(families.clip_standin(g, family), "clip")
        c = families.run(rt, family, g)
        out[family] = (c["model"], c["vae"], c["clip"])
    return out


def test_cogvideox_is_there_exactly_when_comfyui_has_it(rt):
    import comfy.supported_models

    from dev import tiny_families

    has_it = hasattr(comfy.supported_models, "CogVideoX_T2V")
    assert tiny_families.available("cogvideox") == has_it == ("cogvideox" in FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_as_its_family_and_the_vae_gives_its_geometry(loaded, family):
    geometry = pack_module("nodes.latent_geometry")
    model, vae, _ = loaded[family]
    assert pack_module("nodes.adapter_nodes").model_family(model) == families.MODEL_TYPE[family]
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
    train_nodes = pack_module("nodes.train_nodes")
    model = _model(rt, loaded, family)
    attention = train_nodes.adapter_targets(model, "attention")
    both = train_nodes.adapter_targets(model, "attention+mlp")
    assert _generic(attention.shapes) == sorted(ATTENTION[family])
    assert _generic(set(both.shapes) - set(attention.shapes)) == sorted(MLP[family])
    assert both.attention == attention.attention == len(attention.shapes)
    assert attention.describe().startswith(f"adapted layers: {len(attention.shapes)} ({attention.attention} "
                                           "attention) of ")
    assert f"{both.attention} attention, {both.mlp} MLP" in both.describe()


def test_an_unsupported_family_is_refused_by_name(rt):
    """A Wan 2.1 model whose config class ComfyUI named otherwise (as for an image-to-video variant) is refused."""
    import nodes

    model = nodes.UNETLoader().load_unet(MODEL_FILES["wan21"], "default")[0].clone()
    renamed = type("WAN21_Vace", (type(model.model.model_config),), {})
    model.model.model_config = renamed(model.model.model_config.unet_config)
    with pytest.raises(ValueError, match=r"got a WAN21_Vace model; .*HunyuanVideo 1.5, .*LTX-Video"):
        pack_module("nodes.train_nodes").adapter_targets(model, "attention")


def _sample(rt, family, adapter=None, start=0.0, end=10000, add_noise="enable", latent=None, lora=None, g=None):
    g = g or Graph()
    model, _ = families.loaders(g, family)
    if adapter:
        load = g.add("PersonalVideoLoadIdentityAdapter", lora_name=adapter)
        model = g.add("PersonalVideoApplyIdentityAdapter", model=model, adapter=load, strength=1.0, gate_start=0.75,
                      gate_mode="steps", override_gate_start=False)
    if lora:
        model = g.add("LoraLoaderModelOnly", model=model, lora_name=lora, strength_model=1.0)
    pos, neg = families.conditioning(g, family, PROMPT, NEGATIVE)
    return g, g.add("KSamplerAdvanced", model=model, positive=pos, negative=neg,
                    latent_image=latent or families.empty_latent(g, family), noise_seed=SEED, steps=STEPS, cfg=CFG,
                    sampler_name="euler", scheduler="simple", add_noise=add_noise, start_at_step=start,
                    end_at_step=end, return_with_leftover_noise="enable" if end < STEPS else "disable")


def _latent(rt, family, g, link):
    g.capture(link, "out")
    return families.run(rt, family, g)["out"]["samples"].clone()


def two_sampler_reference(rt, family, lora):
    """The native way: KSamplerAdvanced steps 0..GATE on the base model, GATE..end with core LoraLoader."""
    g, first = _sample(rt, family, end=GATE)
    g, second = _sample(rt, family, start=GATE, add_noise="disable", latent=first, lora=lora, g=g)
    return _latent(rt, family, g, second)


@pytest.mark.parametrize("family", FAMILIES)
def test_apply_node_at_gate_075_equals_the_two_sampler_reference(rt, family):
    lora = f"identity_{family}.safetensors"
    out = _latent(rt, family, *_sample(rt, family, adapter=lora))
    base = _latent(rt, family, *_sample(rt, family))
    ref = two_sampler_reference(rt, family, lora)
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) <= 1e-5, rel_err(out, ref)
    assert rel_err(out, base) > 1e-3, "the adapter must change the result after the gate"


UP_STD = {"cogvideox": 1.0}  # see families.install: CogVideoX's last quarter needs a stronger adapter to show


def _backend(loaded, family, up_std):
    """The trainer's backend on the family's model with an adapter whose ``up`` is random (``up_std`` 0: fresh)."""
    train_nodes, backend_mod = pack_module("nodes.train_nodes"), pack_module("nodes.train_backend")
    model, vae, clip = loaded[family]
    with backend_mod.training_mode():
        params, gate, patched = train_nodes.attach_trainable_adapter(
            model, train_nodes.lora_targets(model, "attention"), 4, 4.0, 0, 0.75, "cpu")
        with torch.no_grad():
            gen = torch.Generator().manual_seed(3)
            for up in params.up:
                up.copy_(torch.randn(up.shape, generator=gen) * up_std)
        backend = backend_mod.ComfyBackend(patched, gate, clip, vae, NEGATIVE, families.SIZE, families.SIZE,
                                           families.FRAMES[family], STEPS, CFG, True, "euler", "simple")
    return params, backend


def _rollout(backend):
    rollout, gate = pack_module("training.loop.rollout"), pack_module("training.adapter.gate")

    def generate(denoise, sample, x, sigmas):
        return rollout.gated_rollout(sample, denoise, x, gate.step_gate_sigma(sigmas, 0.75))

    with pack_module("nodes.train_backend").training_mode(), torch.no_grad():
        out = backend.run(PROMPT, SEED, generate)
    to_samples = backend.patcher.model.process_latent_out  # what KSampler returns
    return to_samples(out.source), to_samples(out.tuned)


@pytest.mark.parametrize("family", FAMILIES)
def test_trainer_runs_equal_ksampler_on_the_base_and_the_gated_model(rt, loaded, family):
    files = pack_module("training.adapter.files")
    g, link = _sample(rt, family)
    base = _latent(rt, family, g, link)
    source, tuned = _rollout(_backend(loaded, family, up_std=0.0)[1])
    assert torch.equal(source, base), rel_err(source, base)
    assert torch.equal(tuned, base), "a fresh adapter (up = 0) must equal the base model"
    params, backend = _backend(loaded, family, up_std=UP_STD.get(family, 0.2))
    source, tuned = _rollout(backend)
    name = f"trained_{family}.safetensors"
    tensors = params.lora_state_dict()
    files.save_adapter(rt.model_dir("loras") / name, tensors,
                       files.build_metadata(tensors, 0.75, families.MODEL_TYPE[family], "test"))
    gated = _latent(rt, family, *_sample(rt, family, adapter=name))
    assert torch.equal(source, base), rel_err(source, base)
    assert torch.equal(tuned, gated), rel_err(tuned, gated)
    assert rel_err(gated, base) > 1e-3, "the adapter must change the video for this check to mean anything"


@pytest.fixture(scope="module")
def faces(rt):
    make_pack(rt.model_dir("insightface") / "models", PACK)
    shutil.copy(photo_path("obama.jpg"), rt.base_dir / "input" / "obama.jpg")


@pytest.mark.parametrize("family", FAMILIES)
def test_training_saves_an_adapter_that_reloads_and_drives_the_apply_node(rt, loaded, faces, family):
    g = Graph()
    model, vae = families.loaders(g, family)
    idm = g.add("PersonalVideoLoadIdentityRewardModel", pack=PACK, det_size=640, det_threshold=0.05)
    ref = g.add("PersonalVideoLoadReferenceFaces", identity_reward=idm, images=g.add("LoadImage", image="obama.jpg"),
                augmentations=2, crop_jitter=0.05, colour_jitter=0.1, seed=0)
    bank = g.add("PersonalVideoPromptBank", subject="a man", user_prompts="", negative_prompt=NEGATIVE,
                 use_built_in=True)
    tr = g.add("PersonalVideoTrainIdentityAdapter", model=model, clip=families.clip_standin(g, family), vae=vae,
               reference=ref, identity_reward=idm, prompt_bank=bank, steps=2, learning_rate=5e-2, rank=4, alpha=4.0,
               layers="attention", gate_start=0.75, sampling_steps=STEPS, sampler_name="euler", scheduler="simple",
               cfg=CFG, width=families.SIZE, height=families.SIZE, frames=families.FRAMES[family],
               frames_per_reward=1, icr_weight=1.0, scr_weight=1.0, scr_temperature=100.0, backprop_last_k=0,
               checkpoint_blocks=True, max_grad_norm=1.0, seed=0, checkpoint_every=0, run_name=f"family_{family}",
               resume=False)
    saved = g.add("PersonalVideoSaveIdentityAdapter", adapter=tr, filename_prefix=f"families/{family}",
                  gate_start=0.75)
    g.capture(saved, "name")
    g.capture([tr[0], 2], "summary")
    c = families.run(rt, family, g)
    name, summary = c["name"], c["summary"]
    n = len(pack_module("nodes.train_nodes").lora_targets(loaded[family][0], "attention"))
    assert "2 steps (2 updated the adapter; 0 skipped" in summary, summary
    assert f"adapted layers: {n} ({n} attention) of " in summary, summary
    # The saved file, reloaded by Load Identity Adapter, drives the apply node: equal to the native reference
    # with the same file on core LoraLoader from step GATE.
    out = _latent(rt, family, *_sample(rt, family, adapter=name))
    ref = two_sampler_reference(rt, family, name)
    base = _latent(rt, family, *_sample(rt, family))
    assert rel_err(out, ref) <= 1e-5, rel_err(out, ref)
    assert rel_err(out, base) > 0, "the trained adapter must act after the gate"
