"""The Wan adapter exported by the scale-out trainer in real ComfyUI (in-process, 0.3.75 or $COMFYUI_PATH).

The tiny diffusers Wan (scaleout/tiny.py: random weights, tokenizer built in code) with a peft adapter whose ups
are set to random values (a fresh one is zero and would show nothing), its base weights converted to ComfyUI
files (wan_comfy.py). Both sides get the same text embeddings (the tiny UMT5's; ComfyUI has no tiny UMT5).
"""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors import safe_open

from graphs import pack_module, rel_err
from wan_comfy import write_comfy_wan

SIZE, FRAMES, STEPS, CFG, SEED = 32, 5, 4, 3.0, 3
PROMPT, NEGATIVE = "a man walking on the beach", "blurry"


@pytest.fixture(scope="module")
def exported(comfy):
    from personalvideo.scaleout.backends import ModelSpec, build_backend
    from personalvideo.training.loop.trainer import TrainSettings

    settings = TrainSettings(rank=4, alpha=2.0, sampling_steps=STEPS, cfg=CFG, gate_start=0.75)
    spec = ModelSpec("wan", tiny=True, width=SIZE, height=SIZE, num_frames=FRAMES, negative_prompt=NEGATIVE,
                     layers="attention+mlp")
    model = build_backend(spec, settings)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for up, _ in model.params.pairs().values():
            up.copy_(torch.randn(up.shape, generator=gen) * 0.2)
    model.backend.encode_prompts([PROMPT])
    unet, vae = write_comfy_wan(model.backend.pipe, comfy, "sobackend_export", model.transformer)
    path = model.export_comfyui(comfy.model_dir("loras") / "sobackend_wan.safetensors", {"run": "export-test"})
    return model, unet, vae, path



def test_every_key_loads_with_peft_deltas(exported, caplog):
    import comfy.lora
    import nodes

    model, unet, _, path = exported
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    assert meta["personalvideo.base_model"] == "WAN21_T2V" and meta["personalvideo.gate_start"] == "0.75"
    assert meta["personalvideo.rank"] == "4" and meta["personalvideo.alpha"] == "2"
    assert meta["personalvideo.run"] == "export-test"
    patcher = nodes.UNETLoader().load_unet(unet, "default")[0]
    key_map = comfy.lora.model_lora_keys_unet(patcher.model, {})
    with caplog.at_level(logging.WARNING):
        patches = comfy.lora.load_lora(tensors, key_map)
    assert "lora key not loaded" not in caplog.text
    ups = [k for k in tensors if k.endswith(".lora_up.weight")]
    assert len(ups) == len(model.params.keys) == len(patches) == 20  # 2 blocks x (8 attention + 2 ffn)
    state = patcher.model.state_dict()
    for key, layer in model.params.layers.items():
        weight = state[key].clone().float()
        patched = comfy.lora.calculate_weight([(1.0, patches[key], 1.0, None, None)], weight.clone(), key)
        want = layer.get_delta_weight("identity")
        assert rel_err(patched - weight, want) < 1e-5, key


def _comfy_sample(model_patcher, model, seed):
    import comfy.sample

    latent = torch.zeros(model.backend.latent_shape)
    noise = comfy.sample.prepare_noise(latent, seed)
    conds = {t: [[e.clone(), {}]] for t, e in model.backend.prompts.encoded.items()}
    return comfy.sample.sample(model_patcher, noise, STEPS, CFG, "euler", "simple", conds[PROMPT], conds[NEGATIVE],
                               latent, denoise=1.0, seed=seed, disable_pbar=True)


def _diffusers_sample(model, seed, gated: bool):
    from personalvideo.training.adapter.gate import gate_is_open, step_gate_sigma

    def fn(denoise, sample, x, sigmas):
        gate = step_gate_sigma(sigmas, 0.75) if gated else float("inf")
        return sample(lambda latent, sigma: denoise(latent, sigma, gate_is_open(sigma, gate)), x)

    with torch.no_grad():
        return model.backend.latent_out(model.backend.run(PROMPT, seed, fn))


def test_core_lora_loader_gives_the_diffusers_peft_output(exported):
    """LoraLoaderModelOnly (adapter in every step) on the converted model = diffusers + peft, to 1e-5 rel."""
    import nodes

    model, unet, _, path = exported
    base = nodes.UNETLoader().load_unet(unet, "default")[0]
    with_lora = nodes.LoraLoaderModelOnly().load_lora_model_only(base, path.name, 1.0)[0]
    want, without = _diffusers_sample(model, SEED, gated=False), _comfy_sample(base, model, SEED)
    got = _comfy_sample(with_lora, model, SEED)
    assert rel_err(got, without) > 1e-2, "the adapter must change the output"
    assert rel_err(got, want) < 1e-5


def test_the_packs_load_and_apply_nodes_gate_it_as_the_trainer_does(exported):
    """Load Identity Adapter + Apply Identity Adapter (gate from the file's header, 0.75) = the scale-out
    backend's gated sampling (adapter from step ceil(0.75 x 4) = 3 on)."""
    import nodes

    model, unet, _, path = exported
    adapter_nodes = pack_module("nodes.adapter_nodes")
    adapter = adapter_nodes.LoadIdentityAdapter.execute(path.name).args[0]
    base = nodes.UNETLoader().load_unet(unet, "default")[0]
    gated = adapter_nodes.ApplyIdentityAdapter.execute(base, adapter, 1.0, 0.5).args[0]  # 0.5 unused: header's
    got, always = _comfy_sample(gated, model, SEED), _diffusers_sample(model, SEED, gated=False)
    assert rel_err(got, always) > 1e-3, "the gate must hold the adapter back before step 3"
    assert rel_err(got, _diffusers_sample(model, SEED, gated=True)) < 1e-5


def test_a_module_without_native_name_is_refused():
    from personalvideo.scaleout.export.wan import export_wan, native_key

    assert native_key("blocks.3.attn2.add_k_proj") == "diffusion_model.blocks.3.cross_attn.k_img.weight"
    assert native_key("blocks.0.ffn.net.0.proj") == "diffusion_model.blocks.0.ffn.0.weight"
    with pytest.raises(ValueError, match="patch_embedding.*no ComfyUI-native name"):
        export_wan({"patch_embedding": (torch.zeros(2, 1), torch.zeros(1, 2))}, 1.0)
