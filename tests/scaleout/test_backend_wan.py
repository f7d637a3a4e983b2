"""The diffusers Wan backend on its own: ComfyUI's schedule, peft's per-call gate, block checkpointing, refusals.

Tiny random diffusers models built in code (scaleout/tiny.py; the tokenizer too: the hub is unreachable)."""

from __future__ import annotations

import pytest
import torch

from graphs import pack_module

SMALL = dict(tiny=True, width=16, height=16, num_frames=5, negative_prompt="blurry")


def _build(**over):
    from personalvideo.scaleout.backends import ModelSpec, build_backend
    from personalvideo.training.loop.trainer import TrainSettings

    settings = TrainSettings(**(dict(rank=4, alpha=4.0, sampling_steps=4, cfg=3.0, gate_start=0.5) |
                                over.pop("settings", {})))
    return build_backend(ModelSpec("wan", **(SMALL | over)), settings)


def _move_ups(params, seed=1, std=0.3):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for up, _ in params.pairs().values():
            up.copy_(torch.randn(up.shape, generator=gen) * std)


@pytest.mark.parametrize("shift", [1.0, 3.0, 8.0, 12.0])
@pytest.mark.parametrize("steps", [4, 20, 40])
def test_schedule_and_boundary_equal_comfyuis(comfy, shift, steps):
    import comfy.model_sampling
    import comfy.samplers

    from personalvideo.scaleout.backends import flow

    sampling = comfy.model_sampling.ModelSamplingDiscreteFlow()
    sampling.set_parameters(shift=shift)
    sigmas = comfy.samplers.simple_scheduler(sampling, steps)
    assert torch.equal(flow.simple_schedule(flow.sigma_table(shift), steps), sigmas)
    expert_split = pack_module("nodes.runtime.expert_split")
    # the one boundary rule (training/adapter/experts.py) sees the same timestep fractions on both sides
    fractions = [flow.timestep_fraction(s) for s in sigmas[:-1].tolist()]
    assert fractions == [expert_split.timestep_fraction(sampling, s) for s in sigmas[:-1].tolist()]


def _call(model, adapter_on, prompt="a man smiling"):
    """One CFG model call at sigma 0.5 through the backend's denoise."""
    x = torch.randn(model.backend.latent_shape, generator=torch.Generator().manual_seed(2))
    return model.backend.run(prompt, 0, lambda denoise, sample, x0, sigmas: denoise(x, torch.tensor([0.5]),
                                                                                        adapter_on))


def test_the_gate_switches_peft_per_call_and_keeps_the_adapter_trainable():
    model = _build()
    with torch.no_grad():
        fresh_on, fresh_off = _call(model, True), _call(model, False)
        assert torch.equal(fresh_on, fresh_off), "a fresh adapter (up = 0) equals the base model"
        _move_ups(model.params)
        on, off = _call(model, True), _call(model, False)
    assert torch.equal(off, fresh_off), "adapter off is exactly the base model"
    assert (on - off).abs().max() > 1e-3
    assert all(p.requires_grad for p in model.params.parameters()), "switching off must not freeze the adapter"
    assert [k.rsplit(".", 2)[-2] for k in model.params.keys[:8]] == ["k", "o", "q", "v"] * 2  # cross, then self
    assert model.params.keys[0] == "diffusion_model.blocks.0.cross_attn.k.weight"


def _first_step_grads(model, checkpoint_blocks: bool) -> list[torch.Tensor]:
    from personalvideo.training.adapter.gate import step_gate_sigma
    from personalvideo.training.loop.rollout import gated_rollout

    model.backend.checkpoint_blocks = checkpoint_blocks
    for p in model.params.parameters():
        p.grad = None

    def fn(denoise, sample, x, sigmas):
        rollout = gated_rollout(sample, denoise, x, step_gate_sigma(sigmas, 0.5))
        frames = model.backend.decode(rollout.tuned, [0, 4])
        (frames ** 2).mean().backward()

    model.backend.run("a man walking on the beach", 5, fn)
    return [p.grad.clone() for p in model.params.parameters()]


def test_block_checkpointing_gives_plain_autogradients():
    """Blocks recomputed in backward with the gate state of their forward (peft_adapter.recompute_state)."""
    model = _build()
    _move_ups(model.params)
    plain, checkpointed = _first_step_grads(model, False), _first_step_grads(model, True)
    assert all(float(g.abs().sum()) > 0 for g in plain)
    for got, want in zip(checkpointed, plain, strict=True):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()))


def test_refusals_name_the_input():
    from personalvideo.scaleout.backends import ModelSpec

    with pytest.raises(ValueError, match="sampler/scheduler: got dpmpp_2m/simple.*euler"):
        _build(settings={"sampler": "dpmpp_2m"})
    with pytest.raises(ValueError, match="gate_start: got 0.25.*high-noise expert"):
        _build(expert_boundary=0.875, settings={"gate_start": 0.25})
    with pytest.raises(ValueError, match="model family: got 'sd3'"):
        ModelSpec("sd3", tiny=True)
    with pytest.raises(ValueError, match="model path: got none for wan"):
        ModelSpec("wan")


def test_wan22_ti2v_5b_layout_trains():
    """Wan 2.2 TI2V-5B's layout (48 latent channels, a 16x VAE): latents, decode and gradient have their shapes.
    Only the layout is tiny here; the real model's expand_timesteps (one timestep per token) is the same value at
    every token in text-to-video, so the backend passes the scalar timestep, as ComfyUI does."""
    from personalvideo.training.adapter.gate import step_gate_sigma
    from personalvideo.training.loop.rollout import gated_rollout

    model = _build(width=32, height=32, tiny_options={"ti2v_5b": True})
    assert model.backend.latent_shape == (1, 48, 2, 2, 2) and model.base_model == "WAN22_T2V"
    _move_ups(model.params)

    def fn(denoise, sample, x, sigmas):
        frames = model.backend.decode(gated_rollout(sample, denoise, x, step_gate_sigma(sigmas, 0.5)).tuned, [0, 4])
        (frames ** 2).mean().backward()
        return frames

    assert model.backend.run("a man", 1, fn).shape == (2, 32, 32, 3)
    assert all(float(p.grad.abs().sum()) > 0 for p in model.params.parameters())


@pytest.mark.parametrize("ti2v_5b", [False, True])
def test_per_latent_frame_decode_equals_the_plain_one(ti2v_5b):
    """The checkpointed walk (wan_decode.py) gives the plain decode's frames and gradient; truncated the frames."""
    model = _build(width=32, height=32, num_frames=9, tiny_options={"ti2v_5b": ti2v_5b})
    latent = torch.randn(model.backend.latent_shape, generator=torch.Generator().manual_seed(3)) * 0.5
    frames, grads = {}, {}
    for mode in ("plain", "checkpointed", "truncated"):
        model.backend.decode_gradient = mode
        z = latent.clone().requires_grad_(True)
        frames[mode] = model.backend.decode(z, [2, 7])
        frames[mode].sum().backward()
        grads[mode] = z.grad
    assert torch.allclose(frames["checkpointed"], frames["plain"], atol=1e-6)
    assert torch.allclose(frames["truncated"], frames["plain"], atol=1e-6)
    assert float(grads["plain"].abs().sum()) > 0
    assert torch.allclose(grads["checkpointed"], grads["plain"], rtol=1e-5, atol=1e-7)


def test_a_pipeline_folder_loads_like_the_tiny_model_and_refuses_a_boundary_for_one_model(tmp_path):
    """``path``: diffusers' from_pretrained on a saved (tiny) WanPipeline folder samples as the in-code model."""
    from personalvideo.scaleout import tiny

    tiny.wan_pipeline().save_pretrained(tmp_path)
    loaded, built = _build(tiny=False, path=str(tmp_path), text_tokens=16), _build()

    def source(model):
        return model.backend.run("a man", 0, lambda denoise, sample, x, sigmas:
                                 sample(lambda latent, sigma: denoise(latent, sigma, False), x))

    with torch.no_grad():
        assert torch.equal(source(loaded), source(built))
    with pytest.raises(ValueError, match="expert_boundary: got 0.875, but .* holds one Wan model"):
        _build(tiny=False, path=str(tmp_path), expert_boundary=0.875)
