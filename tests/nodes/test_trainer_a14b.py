"""Wan 2.2 A14B (two experts) in the trainer, in real ComfyUI, against ComfyUI's own Wan 2.2 template graph.

Two tiny random Wan 2.1-architecture experts (ComfyUI loads the real A14B experts as WAN21 too), each with
ModelSamplingSD3 shift 8 as in the template, the tiny Wan 2.1 VAE, and the dev CLIP stand-in for the text
encoder (no tiny UMT5 exists). The template: KSamplerAdvanced on the high-noise expert, steps 0-10 of 20 with
leftover noise, then on the low-noise expert 10-20 without adding noise, euler/simple. The trainer's source
run (no adapter) must equal that graph bit for bit, and its tuned run must equal the graph with the apply
node on the low-noise expert. Boundary 0.9 reproduces the template's split at 10 (0.875 gives 11: checked).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dev import tiny_models
from graphs import EXPERTS, Graph, expert_file, install_experts, pack_module, rel_err

STEPS, SHIFT, CFG, SEED = 20, 8.0, 3.5, 7
PROMPT, NEGATIVE = "a man dancing in the rain", "blurry"
TEMPLATE_BOUNDARY = 0.9  # splits 20 steps at shift 8 at step 10, as the template does


@pytest.fixture(scope="module")
def rt(comfy):
    install_experts(comfy)
    return comfy


def _loaders(g):
    experts = {e: g.add("ModelSamplingSD3", model=g.add("UNETLoader", unet_name=expert_file(e),
                                                         weight_dtype="default"), shift=SHIFT) for e in EXPERTS}
    clip = g.add("PersonalVideoDevCLIPStandIn", width=tiny_models.CONTEXT_WIDTH["wan21"], pooled_width=0, tokens=16)
    return experts, clip


@pytest.fixture(scope="module")
def loaded(rt):
    g = Graph()
    experts, clip = _loaders(g)
    for e, link in experts.items():
        g.capture(link, e)
    g.capture(clip, "clip")
    g.capture(g.add("VAELoader", vae_name="tiny_wan_vae.safetensors"), "vae")
    rt.run(g.nodes)
    return dict(rt.captured())


def template(rt, adapter_file=None, split=10):
    """ComfyUI's Wan 2.2 A14B template; ``adapter_file``: the apply node (defaults) on the low-noise expert."""
    g = Graph()
    experts, clip = _loaders(g)
    low = experts["low_noise"]
    if adapter_file:
        adapter = g.add("PersonalVideoLoadIdentityAdapter", lora_name=adapter_file)
        low = g.add("PersonalVideoApplyIdentityAdapter", model=low, adapter=adapter, strength=1.0, gate_start=0.75,
                    gate_mode="steps", override_gate_start=False)
    pos = g.add("CLIPTextEncode", clip=clip, text=PROMPT)
    neg = g.add("CLIPTextEncode", clip=clip, text=NEGATIVE)
    out = g.add("EmptyHunyuanLatentVideo", width=64, height=64, length=9, batch_size=1)
    for model, start, end, first in ((experts["high_noise"], 0, split, True), (low, split, 10000, False)):
        out = g.add("KSamplerAdvanced", model=model, positive=pos, negative=neg, latent_image=out,
                    add_noise="enable" if first else "disable", noise_seed=SEED, steps=STEPS, cfg=CFG,
                    sampler_name="euler", scheduler="simple", start_at_step=start, end_at_step=end,
                    return_with_leftover_noise="enable" if first else "disable")
    g.capture(out, "samples")
    rt.run(g.nodes)
    return rt.captured()["samples"]["samples"]


def _training_mode():
    return pack_module("nodes.runtime.autograd").training_mode()


def _backend(loaded, boundary=TEMPLATE_BOUNDARY, gate_start=0.75):
    runtime_model, backend_mod = pack_module("nodes.runtime.model"), pack_module("nodes.runtime.backend")
    split = pack_module("nodes.runtime.expert_split")
    with _training_mode():
        low = loaded["low_noise"]
        params, gate, patched = runtime_model.attach_trainable_adapter(
            low, runtime_model.adapter_targets(low, "attention").shapes, 4, 4.0, 0, gate_start, "cpu")
        with torch.no_grad():
            gen = torch.Generator().manual_seed(3)
            for up in params.up:  # a trained-looking adapter: a fresh one (up = 0) changes nothing
                up.copy_(torch.randn(up.shape, generator=gen) * 0.2)
        settings = backend_mod.ComfyBackendSettings(NEGATIVE, 64, 64, 9, STEPS, CFG)
        backend = backend_mod.ComfyBackend(patched, gate, loaded["clip"], loaded["vae"], settings,
                                           split.HighNoiseExpert(loaded["high_noise"], boundary))
    return params, backend, backend.boundary_step


def _trainer_rollout(backend, gate_start=0.75):
    """The trainer's own ``generate`` (training/loop/trainer.py) inside the backend's run."""
    trainer = pack_module("training.loop.trainer")
    holder = SimpleNamespace(settings=trainer.TrainSettings(gate_start=gate_start))
    calls = {}

    def generate(denoise, sample, x, sigmas, **kwargs):
        calls.update(kwargs, slice=sigmas)
        return trainer.Trainer.generate(holder, denoise, sample, x, sigmas, **kwargs)

    with _training_mode(), torch.no_grad():
        return backend.run(PROMPT, SEED, generate), calls


def test_boundary_step_for_shift_8_and_20_steps(loaded):
    split = pack_module("nodes.runtime.expert_split")
    low = loaded["low_noise"]
    sigmas = split.ksampler_sigmas(low, STEPS, "euler", "simple")
    ms = low.get_model_object("model_sampling")
    # The official boundary 0.875: sigma_10 = 0.889 still belongs to the high-noise expert, so it splits at 11.
    assert split.high_noise_steps(ms, sigmas, 0.875) == 11
    assert 0.875 < float(sigmas[10]) < TEMPLATE_BOUNDARY <= float(sigmas[9])
    assert split.high_noise_steps(ms, sigmas, TEMPLATE_BOUNDARY) == 10


def test_source_and_tuned_runs_equal_the_template_without_and_with_the_apply_node(rt, loaded):
    adapter_file = pack_module("training.adapter.files")
    params, backend, b = _backend(loaded)
    assert b == 10
    out, calls = _trainer_rollout(backend)
    assert len(calls["full_sigmas"]) == STEPS + 1 and torch.equal(calls["slice"], calls["full_sigmas"][10:])
    assert out.gated_calls == 5  # global steps 15-19, not 10 + ceil(0.75 x 10) = 18
    to_samples = backend.patcher.model.process_latent_out  # what KSamplerAdvanced returns
    base = template(rt)
    tensors = params.lora_state_dict()
    adapter_file.save_adapter(rt.model_dir("loras") / "trained_a14b.safetensors", tensors,
                              adapter_file.build_metadata(tensors, 0.75, "WAN21_T2V", expert="low_noise"))
    gated = template(rt, "trained_a14b.safetensors")
    # bit-identical: the same two sampler calls, schedules and model calls
    assert torch.equal(to_samples(out.source), base), rel_err(to_samples(out.source), base)
    assert torch.equal(to_samples(out.tuned), gated), rel_err(to_samples(out.tuned), gated)
    assert rel_err(gated, base) > 1e-3, "the adapter must change the video for this check to mean anything"
    # and the high-noise expert matters: splitting at 11 instead gives another video
    assert rel_err(template(rt, split=11), base) > 1e-4


def test_gate_start_in_the_high_noise_steps_is_refused(loaded):
    with pytest.raises(ValueError, match=r"gate_start: got 0\.45, which opens the gate at step 9 of 20, but "
                                         r"steps 0-9 belong to the high-noise expert.*gate_start >= 0\.5"):
        _backend(loaded, gate_start=0.45)
    params, backend, b = _backend(loaded, gate_start=0.5)  # the first low-noise step may be gated
    assert b == 10


def test_boundary_outside_the_range_is_refused(loaded):
    split = pack_module("nodes.runtime.expert_split")
    with pytest.raises(ValueError, match=r"expert_boundary: got 1\.0, expected .* \(0, 1\)"):
        split.HighNoiseExpert(loaded["high_noise"], 1.0)


def test_a_gradient_reaches_the_adapter_through_the_low_noise_part_only(loaded):
    """One backward through the two-expert rollout: the adapter (low-noise expert) gets a finite gradient;
    the high-noise expert's weights get none."""
    params, backend, _ = _backend(loaded)
    trainer = pack_module("training.loop.trainer")
    holder = SimpleNamespace(settings=trainer.TrainSettings(gate_start=0.75))
    weights = torch.randn(backend.latent_shape, generator=torch.Generator().manual_seed(5))

    def loss(denoise, sample, x, sigmas, **kwargs):
        out = trainer.Trainer.generate(holder, denoise, sample, x, sigmas, **kwargs)
        (out.tuned * weights).sum().backward()

    # Every call of the high-noise expert is recorded: it must run without gradient. (Its weights' .grad cannot
    # show it on every version: ComfyUI 0.33 loads diffusion models frozen, as inference tensors.)
    high_model = loaded["high_noise"].model.diffusion_model
    high_calls = []
    hook = high_model.register_forward_hook(
        lambda module, args, out: high_calls.append((torch.is_grad_enabled(), out.requires_grad)))
    try:
        with _training_mode():
            backend.run(PROMPT, SEED, loss)
    finally:
        hook.remove()
    grads = [p.grad for p in params.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert high_calls and not any(grad or requires_grad for grad, requires_grad in high_calls), high_calls
    assert all(p.grad is None for p in high_model.parameters())


def test_trainer_node_refuses_a_gate_start_in_the_high_noise_steps_before_training(rt):
    import shutil

    from dev.comfy_runtime import GraphError
    from dev.face_assets import make_pack, photo_path

    make_pack(rt.model_dir("insightface") / "models", "vectron_s")
    shutil.copy(photo_path("obama.jpg"), rt.base_dir / "input" / "obama.jpg")
    g = Graph()
    experts, clip = _loaders(g)
    idm = g.add("PersonalVideoLoadIdentityRewardModel", pack="vectron_s", det_size=640, det_threshold=0.05)
    ref = g.add("PersonalVideoLoadReferenceFaces", identity_reward=idm, images=g.add("LoadImage", image="obama.jpg"),
                augmentations=2, crop_jitter=0.05, colour_jitter=0.1, seed=0)
    bank = g.add("PersonalVideoPromptBank", subject="a man", user_prompts="", negative_prompt="blurry",
                 use_built_in=True)
    tr = g.add("PersonalVideoTrainIdentityAdapter", model=experts["low_noise"], clip=clip,
               vae=g.add("VAELoader", vae_name="tiny_wan_vae.safetensors"), reference=ref, identity_reward=idm,
               prompt_bank=bank, steps=1, learning_rate=1e-2, rank=4, alpha=4.0, layers="attention", gate_start=0.25,
               sampling_steps=STEPS, sampler_name="euler", scheduler="simple", cfg=CFG, width=64, height=64, frames=9,
               frames_per_reward=2, icr_weight=1.0, scr_weight=1.0, scr_temperature=100.0, backprop_last_k=0,
               checkpoint_blocks=True, max_grad_norm=1.0, seed=0, save_every=0, run_name="a14b_refused",
               resume=False, high_noise_model=experts["high_noise"])  # expert_boundary: the default 0.875
    g.capture(tr, "adapter")
    with pytest.raises(GraphError, match=r"gate_start: got 0\.25, which opens the gate at step 5 of 20, but steps "
                                         r"0-10 belong to the high-noise expert \(expert_boundary 0\.875\)"):
        rt.run(g.nodes)
    assert not (rt.base_dir / "output" / "personalvideo_training" / "a14b_refused.safetensors").exists()
