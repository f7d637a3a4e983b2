"""The gate and the trainer on ComfyUI 0.33's DynamicVRAM (``ModelPatcherDynamic``), the patcher most GPU users'
models get, driven on the CPU (tests/dynamic_vram.py says what is replaced and what that leaves unverified).

Every check runs on each patcher kind this ComfyUI has: the classic ``ModelPatcher`` everywhere, and
``ModelPatcherDynamic`` where ComfyUI has it (0.33; read from its source tree, as tests/families.py does;
``test_dynamic_vram_is_checked_exactly_when_comfyui_has_it``). The results must be the same bit for bit: the
simulated VBAR path streams exact copies of the weights, so any difference is the gate or the trainer computing
differently on the streamed path."""

from __future__ import annotations

import contextlib

import pytest
import torch

from dev.comfy_runtime import comfyui_path
from dynamic_vram import FakeVBAR, dynamic_patcher, simulated_dynamic_vram, streamed_layers
from graphs import install_models, pack_module, rel_err
from toy_reward import cosine_identity

HAS_DYNAMIC = "class ModelPatcherDynamic" in (comfyui_path() / "comfy" / "model_patcher.py").read_text()
PATCHERS = ["ModelPatcher"] + (["ModelPatcherDynamic"] if HAS_DYNAMIC else [])
STEPS, GATE = 8, 6
IDENTITY = "identity_wan21.safetensors"


@pytest.fixture(scope="module")
def rt(comfy):
    install_models(comfy)
    return comfy


def test_dynamic_vram_is_checked_exactly_when_comfyui_has_it(rt):
    import comfy.model_patcher

    assert hasattr(comfy.model_patcher, "ModelPatcherDynamic") == HAS_DYNAMIC == ("ModelPatcherDynamic" in PATCHERS)


@pytest.fixture
def load(monkeypatch):
    """``load(kind, weight_dtype)``: the tiny Wan from UNETLoader on patcher ``kind`` (the DynamicVRAM one
    simulated on the CPU for the rest of the test)."""
    import nodes

    with contextlib.ExitStack() as stack:
        simulated = []

        def load_on(kind, weight_dtype="default"):
            model = nodes.UNETLoader().load_unet("tiny_wan21.safetensors", weight_dtype)[0]
            if kind == "ModelPatcher":
                return model
            if not simulated:
                simulated.append(stack.enter_context(simulated_dynamic_vram(monkeypatch)))
            return dynamic_patcher(model)

        yield load_on


def conditioning():
    import nodes

    encode = nodes.NODE_CLASS_MAPPINGS["PersonalVideoDevTextEncodeStandIn"]()
    return [encode.encode(text, 4096, 0, 16)[0] for text in ("a person walking on a beach", "blurry")]


def sample(model, seed=3):
    """KSampler's arithmetic (comfy.sample.sample), euler/simple, CFG 3; returns the final latent."""
    import comfy.sample

    pos, neg = conditioning()
    latent = torch.zeros(1, 16, 3, 8, 8)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    return comfy.sample.sample(model, noise, STEPS, 3.0, "euler", "simple", pos, neg, latent, disable_pbar=True,
                               seed=seed)


def gated(model, start=0.75, lora=IDENTITY, strength=1.0):
    import nodes

    adapter = nodes.NODE_CLASS_MAPPINGS["PersonalVideoLoadIdentityAdapter"].execute(lora).args[0]
    apply_node = nodes.NODE_CLASS_MAPPINGS["PersonalVideoApplyIdentityAdapter"]
    return apply_node.execute(model, adapter, strength, start, "steps", override_gate_start=True).args[0]


def core_lora(model, strength=1.0):
    import comfy.sd
    import comfy.utils
    import folder_paths

    lora = comfy.utils.load_torch_file(folder_paths.get_full_path("loras", IDENTITY))
    return comfy.sd.load_lora_for_models(model, None, lora, strength, 0)[0]


def vbar_checks(kind: str) -> dict:
    """What the simulated VBAR saw since the fixture started (empty for the classic patcher)."""
    if kind == "ModelPatcher":
        return {}
    return {"faults": sum(v.faults for v in FakeVBAR.instances), "pins_left": sum(v.pins_left()
                                                                                  for v in FakeVBAR.instances)}


@pytest.mark.parametrize("weight_dtype", ["default", "fp8_e4m3fn"])
def test_gate_acts_after_the_gate_only_and_as_on_the_classic_patcher(rt, load, weight_dtype):
    results = {}
    for kind in PATCHERS:
        model = load(kind, weight_dtype)
        out = results[kind] = {"base": sample(model), "gated": sample(gated(model)),
                               "gated_from_0": sample(gated(model, 0.0)), "base_again": sample(model)}
        assert torch.equal(out["base_again"], out["base"]), (kind, "the adapter must not stay in the weights")
        assert rel_err(out["gated"], out["base"]) > 1e-3, (kind, "the adapter must act after the gate")
        if kind == "ModelPatcherDynamic":
            assert len(streamed_layers(model)) >= 20, streamed_layers(model)  # the blocks' Linears stream
            checks = vbar_checks(kind)
            assert checks["faults"] > 0 and checks["pins_left"] == 0, checks  # the VBAR path ran, no pins left
    for kind, out in results.items():
        for name, value in out.items():
            reference = results["ModelPatcher"][name]
            assert torch.equal(value, reference), (kind, name, rel_err(value, reference))


# -- the trainer ------------------------------------------------------------------------------------------------

toy_identity = cosine_identity(torch.rand(64 * 64 * 3, generator=torch.Generator().manual_seed(9)))


def trainer_on(model, blocks=True, steps=1, resume_file=None, on_step=None):
    """The trainer node's code path (ComfyBackend + Trainer) on ``model``: tiny Wan VAE, stand-in text encoder, a toy
    identity reward (tests/toy_reward.py: no face models needed for the weight path), rank 4 on the attention
    layers, gate 0.75, 8 sampling steps, 64x64x9."""
    import nodes

    runtime_model, backend_mod = pack_module("nodes.runtime.model"), pack_module("nodes.runtime.backend")
    trainer_mod, prompts = pack_module("training.loop.trainer"), pack_module("training.prompts")
    vae = nodes.VAELoader().load_vae("tiny_wan_vae.safetensors")[0]
    clip = nodes.NODE_CLASS_MAPPINGS["PersonalVideoDevCLIPStandIn"]().load(4096, 0, 16)[0]
    settings = trainer_mod.TrainSettings(steps=steps, learning_rate=1e-2, rank=4, alpha=4.0, sampling_steps=STEPS,
                                         cfg=3.0, frames_per_reward=2, seed=0, save_every=1)
    params, gate, patched = runtime_model.attach_trainable_adapter(
        model, runtime_model.adapter_targets(model, "attention").shapes, 4, 4.0, 0, 0.75, "cpu")
    backend = backend_mod.ComfyBackend(patched, gate, clip, vae, backend_mod.ComfyBackendSettings(
        "blurry", 64, 64, 9, STEPS, 3.0, checkpoint_blocks=blocks))
    bank = prompts.build_prompt_bank("a man", "", "blurry")
    backend.encode_prompts(bank.prompts)
    trainer = trainer_mod.Trainer(backend, params, bank, settings, identity_reward=toy_identity,
                                  resume_file=resume_file, on_step=on_step)
    return trainer, backend, params


@pytest.mark.parametrize("blocks", [True, False], ids=["checkpoint_blocks", "no_checkpoint_blocks"])
def test_training_step_on_dynamic_vram_equals_the_classic_patcher(rt, load, monkeypatch, blocks):
    """A fresh adapter gives the source video exactly, and the adapter's gradient equals the classic patcher's bit
    for bit, also when the VRAM holds one layer at a time (every fault evicts and reuses the other pages, as when a
    14B model streams on a 24 GB card) and when every page is evicted between the forward and the backward (the
    reward frames' decode lies between them). The training clone still asks ComfyUI for a training step's memory
    (nodes/runtime/memory.py) on DynamicVRAM."""
    import comfy.sampler_helpers

    backend_mod, autograd = pack_module("nodes.runtime.backend"), pack_module("nodes.runtime.autograd")
    memory = pack_module("nodes.runtime.memory")
    trainer_cls = pack_module("training.loop.trainer").Trainer
    generate, decode = trainer_cls.generate, backend_mod.ComfyBackend.decode
    rollouts, shapes, estimate = [], [], comfy.sampler_helpers.estimate_memory

    def recording(self, *args, **kwargs):
        rollout = generate(self, *args, **kwargs)
        rollouts.append((rollout.source.detach().clone(), rollout.tuned.detach().clone()))
        return rollout

    def evicting(self, *args, **kwargs):  # between the tuned forward and the backward
        FakeVBAR.evict_all()
        return decode(self, *args, **kwargs)

    def estimating(model, noise_shape, conds):
        shapes.append(noise_shape[0])
        return estimate(model, noise_shape, conds)

    monkeypatch.setattr(trainer_cls, "generate", recording)
    monkeypatch.setattr(backend_mod.ComfyBackend, "decode", evicting)
    monkeypatch.setattr(comfy.sampler_helpers, "estimate_memory", estimating)
    grads = {}
    for kind in PATCHERS:
        rollouts.clear(), shapes.clear()
        with autograd.training_mode():
            trainer, backend, params = trainer_on(load(kind), blocks)
            FakeVBAR.one_layer_of_vram = kind == "ModelPatcherDynamic"
            record = trainer.train_step(0)
            FakeVBAR.one_layer_of_vram = False
        assert not record.skipped, record
        source, tuned = rollouts[0]
        assert torch.isfinite(source).all() and torch.equal(source, tuned), kind  # fresh adapter == source
        grads[kind] = [p.grad.clone() for p in params.parameters()]
        assert all(torch.isfinite(g).all() for g in grads[kind]) and any(g.abs().sum() > 0 for g in grads[kind])
        factor = memory.training_memory_factor(backend.patcher.model.diffusion_model, blocks)
        assert shapes and set(shapes) == {factor}, (kind, shapes, factor)
        if kind == "ModelPatcherDynamic":
            checks = vbar_checks(kind)
            assert checks["faults"] > 0 and checks["pins_left"] == 0, checks
    for kind, value in grads.items():
        assert all(torch.equal(a, b) for a, b in zip(value, grads["ModelPatcher"])), kind


def resume_file_content(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {"meta": f.metadata(), "tensors": {k: f.get_tensor(k) for k in f.keys()}}


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory (simulated)"), MemoryError("VBAR OOM")],
                         ids=["torch_oom", "aimdo_memory_error"])
def test_out_of_memory_while_streaming_keeps_the_last_good_resume_file(rt, load, monkeypatch, tmp_path, error):
    """Out of memory inside a step while a layer's weight is being brought in (DynamicVRAM: the VBAR fault; classic:
    the cast) stops training with TrainingOutOfMemory (a torch.OutOfMemoryError: ComfyUI then unloads its models)
    and leaves the resume file of the last finished step on disk: the same adapter, optimiser state and header (the
    trainer writes it again on the way out). aimdo reports its own shortage as a Python MemoryError ("VBAR OOM"),
    which counts as out of memory too."""
    import comfy.ops

    autograd = pack_module("nodes.runtime.autograd")
    memory = pack_module("training.loop.memory")
    cast = comfy.ops.cast_bias_weight
    for kind in PATCHERS:
        armed, saved = [], {}
        resume = tmp_path / f"{kind}.safetensors"

        def raising_cast(*args, **kwargs):
            if armed and armed.pop():
                raise error
            return cast(*args, **kwargs)

        def after_step(record, preview):  # step 0 done and saved: fail inside step 1
            saved.update(resume_file_content(resume))
            if kind == "ModelPatcherDynamic":
                FakeVBAR.fault_error = error
            else:
                armed.append(True)

        monkeypatch.setattr(comfy.ops, "cast_bias_weight", raising_cast)
        with autograd.training_mode():
            trainer, _, _ = trainer_on(load(kind), steps=3, resume_file=resume, on_step=after_step)
            with pytest.raises(memory.TrainingOutOfMemory, match="out of memory at training step 1"):
                trainer.train()
        after = resume_file_content(resume)
        assert after["meta"] == saved["meta"] and after["meta"]["step"] == "1", kind
        assert after["tensors"].keys() == saved["tensors"].keys() and all(
            torch.equal(after["tensors"][k], v) for k, v in saved["tensors"].items()), kind
        assert FakeVBAR.fault_error is None and not armed, (kind, "the failure was raised where it was planted")
