"""The diffusers AnimateDiff backend (UNetMotionModel): ComfyUI's SD1.5 noise levels, a training step through the
pack's trainer, peft's gate, checkpointing of the UNet levels.

Tiny random diffusers models built in code (scaleout/tiny.py; the CLIP tokenizer too: the hub is unreachable). The
reward is a stand-in (squared distance of the decoded frames to fixed random frames): a random tiny model draws no
faces. Core ComfyUI has no AnimateDiff, so no step is compared with a node side.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from graphs import rel_err

SIZE = 16


@pytest.fixture(scope="module")
def model():
    from personalvideo.scaleout.backends import ModelSpec, build_backend
    from personalvideo.training.loop.trainer import TrainSettings

    settings = TrainSettings(steps=1, rank=4, alpha=4.0, sampling_steps=2, cfg=2.0, gate_start=0.5,
                             frames_per_reward=2, scr_weight=0.0, learning_rate=1e-2)
    spec = ModelSpec("animatediff", tiny=True, width=SIZE, height=SIZE, num_frames=3, negative_prompt="blurry")
    return build_backend(spec, settings), settings


def _reward(frames):
    target = torch.rand(len(frames), SIZE, SIZE, 3, generator=torch.Generator().manual_seed(5))
    loss = ((frames - target) ** 2).mean()
    return SimpleNamespace(loss=loss, frames_with_face=len(frames), frames_without_face=0,
                           mean_similarity=float(1 - loss.detach()), faces=[])


@pytest.mark.parametrize("steps", [4, 20])
def test_noise_levels_and_schedule_equal_comfyuis_sd15(comfy, model, steps):
    import comfy.model_sampling
    import comfy.samplers

    from personalvideo.scaleout.backends import flow
    from personalvideo.scaleout.backends.animatediff import discrete_sigma_table

    sampling = comfy.model_sampling.ModelSamplingDiscrete()
    assert torch.equal(discrete_sigma_table(), sampling.sigmas)
    assert torch.equal(flow.simple_schedule(discrete_sigma_table(), steps),
                       comfy.samplers.simple_scheduler(sampling, steps))
    backend = model[0].backend
    sigmas = comfy.samplers.simple_scheduler(sampling, steps)[:-1]
    timesteps = (sigmas.log()[None, :] - backend.log_sigmas[:, None]).abs().argmin(dim=0)
    assert torch.equal(timesteps, sampling.timestep(sigmas))


def _grads(model, checkpoint_blocks):
    from personalvideo.training.adapter.gate import step_gate_sigma
    from personalvideo.training.loop.rollout import gated_rollout

    model.backend.checkpoint_blocks = checkpoint_blocks
    for p in model.params.parameters():
        p.grad = None

    def fn(denoise, sample, x, sigmas):
        # on the latent: a random UNet predicts little noise, so its decoded frames sit in the [0, 1] clamp
        rollout = gated_rollout(sample, denoise, x, step_gate_sigma(sigmas, 0.5))
        (rollout.tuned ** 2).mean().backward()

    model.backend.run("a man smiling", 3, fn)
    return [p.grad.clone() for p in model.params.parameters()]


def test_checkpointed_unet_levels_give_plain_autogradients_and_a_step_trains(model):
    from personalvideo.training.loop.trainer import Trainer
    from personalvideo.training.prompts import PromptBank

    model, settings = model
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for up, _ in model.params.pairs().values():
            up.copy_(torch.randn(up.shape, generator=gen) * 0.3)
    plain, checkpointed = _grads(model, False), _grads(model, True)
    assert all(float(g.abs().sum()) > 0 for g in plain)
    for got, want in zip(checkpointed, plain, strict=True):
        assert rel_err(got, want) < 1e-4
    before = {k: v.clone() for k, v in model.params.lora_state_dict().items()}
    trainer = Trainer(model.backend, model.params, PromptBank(("a man walking",), "blurry", "a man"), settings,
                      identity_reward=_reward)
    assert trainer.train_step(0).skipped == ""
    after = model.params.lora_state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in before.items())
