"""The diffusers HunyuanVideo backend: a training step through the pack's trainer, peft's gate, block
checkpointing, and its export read by the pack's Load node and ComfyUI's LoRA loader.

Tiny random diffusers models built in code (scaleout/tiny.py: Llama and CLIP text encoders and their tokenizer
too, the hub being unreachable). The reward is a stand-in (squared distance of the decoded frames to fixed random
frames): a random tiny model draws no faces. Not compared with the node side step for step: the two HunyuanVideo
codes' base outputs differ (~5e-2, cause not found); test_export_hunyuan.py compares the adapters' weights.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from graphs import MODEL_FILES, install_models, pack_module

SIZE = 16


@pytest.fixture(scope="module")
def model():
    from personalvideo.scaleout.backends import ModelSpec, build_backend
    from personalvideo.training.loop.trainer import TrainSettings

    settings = TrainSettings(steps=1, rank=4, alpha=4.0, sampling_steps=4, cfg=1.0, gate_start=0.5,
                             frames_per_reward=2, scr_weight=0.0, learning_rate=1e-2)
    spec = ModelSpec("hunyuan_video", tiny=True, width=SIZE, height=SIZE, num_frames=5, negative_prompt="blurry",
                     layers="attention+mlp")
    return build_backend(spec, settings), settings


def _reward(frames):
    target = torch.rand(len(frames), SIZE, SIZE, 3, generator=torch.Generator().manual_seed(5))
    loss = ((frames - target) ** 2).mean()
    return SimpleNamespace(loss=loss, frames_with_face=len(frames), frames_without_face=0,
                           mean_similarity=float(1 - loss.detach()), faces=[])


def _grads(model, checkpoint_blocks):
    from personalvideo.training.adapter.gate import step_gate_sigma
    from personalvideo.training.loop.rollout import gated_rollout

    model.backend.checkpoint_blocks = checkpoint_blocks
    for p in model.params.parameters():
        p.grad = None

    def fn(denoise, sample, x, sigmas):
        rollout = gated_rollout(sample, denoise, x, step_gate_sigma(sigmas, 0.5))
        _reward(model.backend.decode(rollout.tuned, [0, 4])).loss.backward()

    model.backend.run("a man smiling", 3, fn)
    return [p.grad.clone() for p in model.params.parameters()]


def test_block_checkpointing_gives_plain_autogradients_and_the_gate_is_exact(model):
    """HunyuanVideo's blocks, checkpointed with the gate state of their forward, as plain autograd."""
    model, _ = model
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for up, _ in model.params.pairs().values():
            up.copy_(torch.randn(up.shape, generator=gen) * 0.3)
    plain, checkpointed = _grads(model, False), _grads(model, True)
    assert all(float(g.abs().sum()) > 0 for g in plain)
    for got, want in zip(checkpointed, plain, strict=True):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()))
    x = torch.randn(model.backend.latent_shape, generator=torch.Generator().manual_seed(2))
    call = lambda on: model.backend.run("a man", 0, lambda d, s, x0, sig: d(x, torch.tensor([0.6]), on))  # noqa: E731
    with torch.no_grad():
        on, off = call(True), call(False)
        for up, _ in model.params.pairs().values():
            up.zero_()
        fresh = call(True)
    assert (on - off).abs().max() > 1e-3 and torch.equal(fresh, off), "adapter off = a fresh adapter = the base"


def test_a_training_step_moves_the_adapter_and_comfyui_loads_the_export(model, comfy, caplog):
    import nodes
    from comfy import lora as comfy_lora

    from personalvideo.training.loop.trainer import Trainer
    from personalvideo.training.prompts import PromptBank

    model, settings = model
    before = {k: v.clone() for k, v in model.params.lora_state_dict().items()}
    trainer = Trainer(model.backend, model.params, PromptBank(("a man walking",), "blurry", "a man"), settings,
                      identity_reward=_reward)
    record = trainer.train_step(0)
    assert record.skipped == "" and any(not torch.equal(v, model.params.lora_state_dict()[k])
                                        for k, v in before.items())
    path = model.export_comfyui(comfy.model_dir("loras") / "sobackend_hunyuan.safetensors")
    adapter = pack_module("nodes.adapter_nodes").LoadIdentityAdapter.execute(path.name).args[0]
    assert adapter.metadata["personalvideo.base_model"] == "HunyuanVideo"
    assert adapter.metadata["personalvideo.rank"] == "4"  # as trained; the fused qkv/linear1 have rank 12/16
    install_models(comfy)
    patcher = nodes.UNETLoader().load_unet(MODEL_FILES["hunyuan_video"], "default")[0]
    with caplog.at_level(logging.WARNING):
        patches = comfy_lora.load_lora(dict(adapter), comfy_lora.model_lora_keys_unet(patcher.model, {}))
    assert "lora key not loaded" not in caplog.text
    assert len(patches) == 10  # qkv x 2, proj x 2, mlp x 4, linear1, linear2
