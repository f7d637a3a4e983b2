"""One training step of the diffusers Wan backend equals the ComfyUI backend's (nodes/runtime/backend.py) on the
same weights: the tiny diffusers Wan (scaleout/tiny.py, random weights, tokenizer built in code) converted to
ComfyUI files (wan_comfy.py) and loaded by core UNETLoader / VAELoader in the real in-process ComfyUI.

Said plainly: the two sides get the same text embeddings (the diffusers side's tiny UMT5, handed to ComfyUI as its
CONDITIONING: ComfyUI has no tiny UMT5), and the reward is a stand-in (squared distance of the decoded frames to
fixed random frames), the same function on both sides: a random tiny model draws no faces for ArcFace, and the
point here is that everything before the reward (sampling, gate, CFG, decode, gradient) is the same.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from graphs import pack_module, rel_err
from wan_comfy import write_comfy_wan

PROMPTS = ("a man walking on the beach", "a man smiling at night")
NEGATIVE = "blurry low quality"
SIZE, FRAMES, STEPS, CFG, RANK, SEED = 32, 5, 4, 3.0, 4, 0


def _settings(module, **over):
    return module.TrainSettings(**(dict(steps=1, learning_rate=1e-2, rank=RANK, alpha=4.0, gate_start=0.5,
                                        sampling_steps=STEPS, cfg=CFG, frames_per_reward=2, scr_weight=0.0,
                                        seed=SEED) | over))


def _reward(target):
    def reward(frames):
        loss = ((frames - target[: len(frames)].to(frames)) ** 2).mean()
        return SimpleNamespace(loss=loss, frames_with_face=len(frames), frames_without_face=0,
                               mean_similarity=float(1 - loss.detach()), faces=[])
    return reward


def _moved_adapter(params) -> None:
    """Ups set to seeded random values (a fresh adapter has up = 0: tuned = source and no gradient into down)."""
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for up, _ in params.pairs().values():
            up.copy_(torch.randn(up.shape, generator=gen) * 0.3)


def _recorded_step(trainer, monkeypatch) -> dict:
    """Train step 0, keeping the rollout, the decoded reward frames and the adapter gradient before clipping."""
    rec = {"frames": []}
    generate, decode = trainer.generate, trainer.decode_frames

    def recording_generate(*args, **kwargs):
        rec["rollout"] = generate(*args, **kwargs)
        return rec["rollout"]

    def recording_decode(latent, frames):
        out = decode(latent, frames)
        rec["frames"].append(out.detach().clone())
        return out

    def recording_clip(params, *args, _clip=torch.nn.utils.clip_grad_norm_, **kwargs):
        params = list(params)
        rec["grads"] = [p.grad.detach().clone() for p in params]
        return _clip(params, *args, **kwargs)

    trainer.generate, trainer.decode_frames = recording_generate, recording_decode
    with monkeypatch.context() as m:
        m.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
        trainer.train_step(0)
    return rec


# Wan 2.1 (gate 0.5 of 4 steps: 2 gated calls) and Wan 2.2 A14B (two experts, boundary 0.875: steps 0-2 are the
# high-noise expert's at shift 8, the gate 0.75 opens at step 3 in the low-noise expert: 1 gated call).
CASES = {"wan21": dict(boundary=None, gate_start=0.5, gated_calls=2),
         "wan22_a14b": dict(boundary=0.875, gate_start=0.75, gated_calls=1)}


@pytest.mark.parametrize("case", CASES)
def test_one_step_equals_the_comfyui_backend(comfy, case, monkeypatch):
    import nodes

    from personalvideo.scaleout.backends import ModelSpec, build_backend
    from personalvideo.training.loop import trainer as trainer_module
    from personalvideo.training.prompts import PromptBank

    boundary, gate_start, gated_calls = CASES[case].values()
    spec = ModelSpec("wan", tiny=True, width=SIZE, height=SIZE, num_frames=FRAMES, negative_prompt=NEGATIVE,
                     expert_boundary=boundary)
    model = build_backend(spec, _settings(trainer_module, gate_start=gate_start))
    model.backend.encode_prompts(PROMPTS)
    unet_name, vae_name = write_comfy_wan(model.backend.pipe, comfy, f"sobackend_{case}", model.transformer)
    target = torch.rand(2, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(5))

    # ComfyUI side: the trainer node's own adapter, gate and backend on the converted files.
    runtime_model, train_backend = pack_module("nodes.runtime.model"), pack_module("nodes.runtime.backend")
    autograd = pack_module("nodes.runtime.autograd")
    pack_trainer, pack_prompts = pack_module("training.loop.trainer"), pack_module("training.prompts")
    patcher = nodes.UNETLoader().load_unet(unet_name, "default")[0]
    vae = nodes.VAELoader().load_vae(vae_name)[0]
    settings = _settings(pack_trainer, gate_start=gate_start)
    with autograd.training_mode():
        shapes = runtime_model.adapter_targets(patcher, "attention").shapes
        params, gate, patched = runtime_model.attach_trainable_adapter(patcher, shapes, RANK, 4.0, SEED,
                                                                     settings.gate_start, "cpu")
        expert = None
        if boundary is not None:
            high_name, _ = write_comfy_wan(model.backend.pipe, comfy, f"sobackend_{case}_high",
                                           model.backend.high_noise)
            high = nodes.UNETLoader().load_unet(high_name, "default")[0]
            expert = pack_module("nodes.runtime.expert_split").HighNoiseExpert(high, boundary)
        sampling = train_backend.ComfyBackendSettings(NEGATIVE, SIZE, SIZE, FRAMES, STEPS, CFG)
        backend = train_backend.ComfyBackend(patched, gate, None, vae, sampling, expert)
        backend.prompts.encoded = {t: [[e.clone(), {}]] for t, e in model.backend.prompts.encoded.items()}
        if boundary is not None:
            assert backend.boundary_step == model.backend.boundary_step == 3
            assert model.expert == "low_noise"  # what its exported adapter records, as the node's
        assert params.keys == model.params.keys
        for (_, down_c), (_, down_d) in zip(params.pairs().values(), model.params.pairs().values()):
            assert torch.equal(down_c.detach(), down_d.detach()), "the same init rule gives the same adapter"
        bank = pack_prompts.PromptBank(PROMPTS, NEGATIVE, "a man")
        _moved_adapter(params)
        comfy_rec = _recorded_step(pack_trainer.Trainer(backend, params, bank, settings, _reward(target)),
                                   monkeypatch)

    # diffusers side: the same trainer core on the peft backend.
    _moved_adapter(model.params)
    trainer = trainer_module.Trainer(model.backend, model.params, PromptBank(PROMPTS, NEGATIVE, "a man"),
                                     _settings(trainer_module, gate_start=gate_start), _reward(target))
    ours = _recorded_step(trainer, monkeypatch)

    assert rel_err(ours["rollout"].source, comfy_rec["rollout"].source) < 1e-5
    assert rel_err(ours["rollout"].tuned.detach(), comfy_rec["rollout"].tuned.detach()) < 1e-5
    assert ours["rollout"].gated_calls == comfy_rec["rollout"].gated_calls == gated_calls
    assert rel_err(ours["rollout"].tuned.detach(), ours["rollout"].source) > 1e-3, "the adapter acts after the gate"
    for got, want in zip(ours["frames"], comfy_rec["frames"], strict=True):
        assert rel_err(got, want) < 1e-5
    assert all(float(g.abs().sum()) > 0 for g in comfy_rec["grads"]), "every up and down gets gradient"
    for got, want in zip(ours["grads"], comfy_rec["grads"], strict=True):
        assert rel_err(got, want) < 1e-4
