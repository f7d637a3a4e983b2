"""The trainer's generation with each sampler it offers, in real ComfyUI (tiny random Wan 2.1, tiny Wan VAE).

For every training sampler: the source run (adapter off) equals core KSampler on the base model, the adapter
run equals core KSampler on the model from the apply node with the same adapter, and the gradient through
the sampler's own arithmetic and the gated, checkpointed model calls matches central finite differences.
The loss in the last check is a fixed random projection of the final latent. Not the face reward: it crops
where a detector finds a face, which is piecewise, so finite differences would measure the detector (its
gradient is checked in test_identity_reward.py). Not decoded frames either: ComfyUI clamps decoded pixels to
[0, 1] and the tiny random VAE saturates, so finite differences converge only linearly there (measured:
2% off at eps 1e-3), while on the latent they converge quadratically (euler: 8.9, 1.4, 0.13, 0.007 absolute
error at eps 3e-2 ... 1e-3, on a directional derivative of 43.5).
"""

from __future__ import annotations

import pytest
import torch

from dev import tiny_models
from graphs import MODEL_FILES, Graph, directional_gradient_check, install_models, pack_module, rel_err

FAMILY = "wan21"
SAMPLERS = ("euler", "heun", "dpmpp_2m", "uni_pc", "uni_pc_bh2", "ddim")
SCHEDULER = {"euler": "simple", "heun": "normal", "dpmpp_2m": "karras", "uni_pc": "simple",
             "uni_pc_bh2": "beta", "ddim": "ddim_uniform"}
STEPS, CFG, SEED, PROMPT, NEGATIVE = 8, 3.0, 11, "a man dancing in the rain", "blurry"


@pytest.fixture(scope="module")
def rt(comfy):
    install_models(comfy)
    return comfy


def _loaders(g):
    model = g.add("UNETLoader", unet_name=MODEL_FILES[FAMILY], weight_dtype="default")
    clip = g.add("PersonalVideoDevCLIPStandIn", width=tiny_models.CONTEXT_WIDTH[FAMILY],
                 pooled_width=tiny_models.POOLED_WIDTH[FAMILY], tokens=16)
    return model, clip


@pytest.fixture(scope="module")
def loaded(rt):
    g = Graph()
    model, clip = _loaders(g)
    g.capture(model, "model")
    g.capture(clip, "clip")
    g.capture(g.add("VAELoader", vae_name="tiny_wan_vae.safetensors"), "vae")
    rt.run(g.nodes)
    return {k: rt.captured()[k] for k in ("model", "clip", "vae")}


def _training_mode():
    """What the trainer node sets around a run."""
    return pack_module("nodes.runtime.autograd").training_mode()


def _setup(loaded, sampler, up_std=0.2):
    runtime_model, backend_mod = pack_module("nodes.runtime.model"), pack_module("nodes.runtime.backend")
    with _training_mode():
        model = loaded["model"]
        shapes = runtime_model.adapter_targets(model, "attention").shapes
        params, gate, patched = runtime_model.attach_trainable_adapter(model, shapes, 4, 4.0, 0, 0.75, "cpu")
        with torch.no_grad():
            gen = torch.Generator().manual_seed(3)
            for up in params.up:  # a trained-looking adapter: a fresh one (up = 0) changes nothing
                up.copy_(torch.randn(up.shape, generator=gen) * up_std)
        settings = backend_mod.ComfyBackendSettings(NEGATIVE, 64, 64, 9, STEPS, CFG, True, sampler, SCHEDULER[sampler])
        backend = backend_mod.ComfyBackend(patched, gate, loaded["clip"], loaded["vae"], settings)
    return params, backend


def _rollout(backend):
    rollout, gate = pack_module("training.loop.rollout"), pack_module("training.adapter.gate")

    def generate(denoise, sample, x, sigmas):
        return rollout.gated_rollout(sample, denoise, x, gate.step_gate_sigma(sigmas, 0.75))

    with _training_mode(), torch.no_grad():
        return backend.run(PROMPT, SEED, generate)


def _ksampler(rt, sampler, adapter_file=None):
    g = Graph()
    model, clip = _loaders(g)
    if adapter_file:
        adapter = g.add("PersonalVideoLoadIdentityAdapter", lora_name=adapter_file)
        model = g.add("PersonalVideoApplyIdentityAdapter", model=model, adapter=adapter, strength=1.0,
                      gate_start=0.75, gate_mode="steps")
    pos = g.add("CLIPTextEncode", clip=clip, text=PROMPT)
    neg = g.add("CLIPTextEncode", clip=clip, text=NEGATIVE)
    latent = g.add("EmptyHunyuanLatentVideo", width=64, height=64, length=9, batch_size=1)
    out = g.add("KSampler", model=model, positive=pos, negative=neg, latent_image=latent, seed=SEED, steps=STEPS,
                cfg=CFG, sampler_name=sampler, scheduler=SCHEDULER[sampler], denoise=1.0)
    g.capture(out, "samples")
    rt.run(g.nodes)
    return rt.captured()["samples"]["samples"]


def test_the_offered_samplers_are_the_tested_ones(rt):
    assert pack_module("nodes.runtime.backend").TRAINING_SAMPLERS == SAMPLERS


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_source_and_adapter_runs_equal_ksampler_without_and_with_the_apply_node(rt, loaded, sampler):
    adapter_file = pack_module("training.adapter.files")
    params, backend = _setup(loaded, sampler)
    out = _rollout(backend)
    to_samples = backend.patcher.model.process_latent_out  # what KSampler returns
    base = _ksampler(rt, sampler)
    name = f"trained_{sampler}.safetensors"
    adapter_file.save_adapter(rt.model_dir("loras") / name, params.lora_state_dict(),
                              adapter_file.build_metadata(params.lora_state_dict(), 0.75, "WAN21_T2V"))
    gated = _ksampler(rt, sampler, name)
    # bit-identical: the same sampler function, schedule and model calls (measured: 0.0 for every sampler)
    assert torch.equal(to_samples(out.source), base), rel_err(to_samples(out.source), base)
    assert torch.equal(to_samples(out.tuned), gated), rel_err(to_samples(out.tuned), gated)
    assert rel_err(gated, base) > 1e-3, "the adapter must change the video for this check to mean anything"


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_gradient_through_the_sampler_matches_finite_differences(rt, loaded, sampler):
    rollout, gate = pack_module("training.loop.rollout"), pack_module("training.adapter.gate")
    params, backend = _setup(loaded, sampler)
    weights = torch.randn(backend.latent_shape, generator=torch.Generator().manual_seed(5))

    def loss(denoise, sample, x, sigmas):
        out = rollout.gated_rollout(sample, denoise, x, gate.step_gate_sigma(sigmas, 0.75))
        return (out.tuned * weights).sum()

    with _training_mode():
        analytic, numeric, values = directional_gradient_check(backend, params, loss, PROMPT, SEED)
    assert abs(analytic) > 1.0
    # 2e-3 relative, plus the float32 rounding of the loss divided by 2·eps (about 1e-2 here)
    assert abs(numeric - analytic) <= 2e-3 * abs(analytic) + 2e-2, (numeric, analytic, values)
