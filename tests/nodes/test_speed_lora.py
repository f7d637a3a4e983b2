"""Speed LoRAs (lightx2v / Wan2.2-Lightning, 4-8 steps, cfg 1) always on under the identity adapter, in real
ComfyUI on the tiny Wan models.

The speed LoRA is a random LoRA on every block linear (a stand-in: no small real distillation LoRA exists) in a
real safetensors file, loaded by core LoraLoaderModelOnly before the trainer and before the apply node, as a user
wires it. At 4, 6 and 8 steps the trainer's source run must equal KSampler on that model and its tuned run KSampler
on the apply node's model over it, bit for bit; and the gate at few steps is what the README says: gate_start 0.75
opens at step ceil(0.75 N), one gated step at 4 and 6 steps, two at 8. The Wan 2.2 A14B form (the template's
Lightning switch: speed LoRAs on both experts, 4 steps split at 2) is checked the same way.
"""

from __future__ import annotations

import math

import pytest
import torch

import wan22_template as tpl
from dev import tiny_models
from graphs import MODEL_FILES, Graph, install_models, rel_err

FAMILY, CFG, SEED = "wan21", 1.0, 7
SPEED_LORA = "tiny_speed_lora_wan21.safetensors"


@pytest.fixture(scope="module")
def rt(comfy):
    install_models(comfy)
    tpl.install(comfy)
    path = comfy.model_dir("loras") / SPEED_LORA
    if not path.exists():
        tiny_models.write_random_lora(FAMILY, path, rank=8, alpha=8.0, seed=30, std=0.08)
    return comfy


def _model(g: Graph, speed_lora: bool = True):
    model = g.add("UNETLoader", unet_name=MODEL_FILES[FAMILY], weight_dtype="default")
    if speed_lora:
        model = g.add("LoraLoaderModelOnly", model=model, lora_name=SPEED_LORA, strength_model=1.0)
    return model


@pytest.fixture(scope="module")
def loaded(rt):
    g = Graph()
    g.capture(_model(g), "model")
    g.capture(tpl.clip_standin(g), "clip")
    g.capture(g.add("VAELoader", vae_name="tiny_wan_vae.safetensors"), "vae")
    rt.run(g.nodes)
    return dict(rt.captured())


def _ksampler(rt, steps: int, adapter_file: str | None = None, speed_lora: bool = True):
    g = Graph()
    model = _model(g, speed_lora)
    if adapter_file:
        adapter = g.add("PersonalVideoLoadIdentityAdapter", lora_name=adapter_file)
        model = g.add("PersonalVideoApplyIdentityAdapter", model=model, adapter=adapter, strength=1.0,
                      gate_start=0.75, gate_mode="steps", override_gate_start=False)
    clip = tpl.clip_standin(g)
    pos = g.add("CLIPTextEncode", clip=clip, text=tpl.PROMPT)
    neg = g.add("CLIPTextEncode", clip=clip, text=tpl.NEGATIVE)
    latent = g.add("EmptyHunyuanLatentVideo", width=tpl.SIZE, height=tpl.SIZE, length=tpl.FRAMES, batch_size=1)
    out = g.add("KSampler", model=model, positive=pos, negative=neg, latent_image=latent, seed=SEED, steps=steps,
                cfg=CFG, sampler_name="euler", scheduler="simple", denoise=1.0)
    g.capture(out, "samples")
    rt.run(g.nodes)
    return rt.captured()["samples"]["samples"].clone()


@pytest.mark.parametrize("steps, gated", [(4, 1), (6, 1), (8, 2)])
def test_trainer_runs_equal_ksampler_with_the_speed_lora_and_the_apply_node(rt, loaded, steps, gated):
    params, backend = tpl.trainable_backend(loaded["model"], loaded["clip"], loaded["vae"], steps, CFG)
    out = tpl.trainer_rollout(backend)
    assert out.gated_calls == gated == steps - math.ceil(0.75 * steps)
    to_samples = backend.patcher.model.process_latent_out  # what KSampler returns
    base = _ksampler(rt, steps)
    adapter = tpl.save_adapter(rt, params, f"speed_lora_trained_{steps}.safetensors")
    tuned = _ksampler(rt, steps, adapter)
    assert torch.equal(to_samples(out.source), base), rel_err(to_samples(out.source), base)
    assert torch.equal(to_samples(out.tuned), tuned), rel_err(to_samples(out.tuned), tuned)
    # both checks mean something: the adapter changes the video, and the speed LoRA is on in both runs
    assert rel_err(tuned, base) > 1e-3
    assert rel_err(_ksampler(rt, steps, speed_lora=False), base) > 1e-3


def test_a14b_with_speed_loras_on_both_experts_equals_the_lightning_template(rt):
    """4 steps split at 2 (expert_switch_step), cfg 1; the adapter gated at step 3, on the low-noise expert."""
    loaded = tpl.load(rt, 5.0, speed_lora=True)
    params, backend = tpl.trainable_backend(loaded["low_noise"], loaded["clip"], loaded["vae"], 4, 1.0,
                                            high_noise=loaded["high_noise"], switch_step=2)
    assert backend.boundary_step == 2
    out = tpl.trainer_rollout(backend)
    assert out.gated_calls == 1  # global step 3 = ceil(0.75 x 4)
    to_samples = backend.patcher.model.process_latent_out
    base = tpl.two_samplers(rt, 5.0, 4, 2, 1.0, speed_lora=True)["out"]
    tuned = tpl.two_samplers(rt, 5.0, 4, 2, 1.0, speed_lora=True,
                             adapter_file=tpl.save_adapter(rt, params, "speed_lora_a14b.safetensors"))["out"]
    assert torch.equal(to_samples(out.source), base), rel_err(to_samples(out.source), base)
    assert torch.equal(to_samples(out.tuned), tuned), rel_err(to_samples(out.tuned), tuned)
    assert rel_err(tuned, base) > 1e-3
    assert rel_err(tpl.two_samplers(rt, 5.0, 4, 2, 1.0)["out"], base) > 1e-3  # the speed LoRAs are on
