"""ComfyUI's current Wan 2.2 14B T2V template as a test graph, at any shift, step count and split, with or without
the 4-step speed LoRAs, on the tiny experts (graphs.install_experts).

The template (comfyui-workflow-templates, ``video_wan2_2_14B_t2v.json``): per expert UNETLoader -> (with the
Lightning switch on: LoraLoaderModelOnly, the lightx2v 4-step LoRA of that expert) -> ModelSamplingSD3 shift 5;
KSamplerAdvanced on the high-noise expert from step 0 to the split with leftover noise, then on the low-noise
expert from the split to the end without adding noise; euler/simple. Off: 20 steps split at 10, cfg 3.5; on: 4
steps split at 2, cfg 1. The speed LoRAs here are random (a stand-in for lightx2v / Lightning: no small real one
exists), in real safetensors files that core LoraLoaderModelOnly loads.
"""

from __future__ import annotations

import torch

from dev import tiny_models
from graphs import EXPERTS, Graph, expert_file, install_experts, pack_module

PROMPT, NEGATIVE, SEED = "a man dancing in the rain", "blurry", 7
SIZE, FRAMES = 64, 9


def speed_lora_file(expert: str) -> str:
    return f"tiny_wan22_speed_lora_{expert}.safetensors"


def install(comfy):
    """The tiny experts and one random speed LoRA per expert (on every block linear, as lightx2v's)."""
    install_experts(comfy)
    for i, expert in enumerate(EXPERTS):
        path = comfy.model_dir("loras") / speed_lora_file(expert)
        if not path.exists():
            tiny_models.write_random_lora("wan21", path, rank=8, alpha=8.0, seed=40 + i, std=0.08)
    return comfy


def expert_models(g: Graph, shift: float, speed_lora: bool) -> dict:
    """{expert: MODEL link} as the template builds them."""
    out = {}
    for expert in EXPERTS:
        model = g.add("UNETLoader", unet_name=expert_file(expert), weight_dtype="default")
        if speed_lora:
            model = g.add("LoraLoaderModelOnly", model=model, lora_name=speed_lora_file(expert), strength_model=1.0)
        out[expert] = g.add("ModelSamplingSD3", model=model, shift=shift)
    return out


def clip_standin(g: Graph):
    return g.add("PersonalVideoDevCLIPStandIn", width=tiny_models.CONTEXT_WIDTH["wan21"], pooled_width=0, tokens=16)


def load(comfy, shift: float, speed_lora: bool = False) -> dict:
    """{high_noise, low_noise, clip, vae} as the loader nodes give them."""
    g = Graph()
    for expert, link in expert_models(g, shift, speed_lora).items():
        g.capture(link, expert)
    g.capture(clip_standin(g), "clip")
    g.capture(g.add("VAELoader", vae_name="tiny_wan_vae.safetensors"), "vae")
    comfy.run(g.nodes)
    return dict(comfy.captured())


def two_samplers(comfy, shift: float, steps: int, split: int, cfg: float, speed_lora: bool = False,
                 adapter_file: str | None = None, prompt: str = PROMPT, seed: int = SEED) -> dict:
    """Run the template's two KSamplerAdvanced; returns {"high": first sampler's LATENT samples, "out": second's}.
    ``adapter_file``: Load + Apply Identity Adapter (its recorded gate start) on the low-noise expert."""
    g = Graph()
    experts = expert_models(g, shift, speed_lora)
    low = experts["low_noise"]
    if adapter_file:
        adapter = g.add("PersonalVideoLoadIdentityAdapter", lora_name=adapter_file)
        low = g.add("PersonalVideoApplyIdentityAdapter", model=low, adapter=adapter, strength=1.0, gate_start=0.75,
                    gate_mode="steps", override_gate_start=False)
    clip = clip_standin(g)
    pos, neg = g.add("CLIPTextEncode", clip=clip, text=prompt), g.add("CLIPTextEncode", clip=clip, text=NEGATIVE)
    out = g.add("EmptyHunyuanLatentVideo", width=SIZE, height=SIZE, length=FRAMES, batch_size=1)
    for name, model, start, end, first in (("high", experts["high_noise"], 0, split, True),
                                           ("out", low, split, 10000, False)):
        out = g.add("KSamplerAdvanced", model=model, positive=pos, negative=neg, latent_image=out,
                    add_noise="enable" if first else "disable", noise_seed=seed, steps=steps, cfg=cfg,
                    sampler_name="euler", scheduler="simple", start_at_step=start, end_at_step=end,
                    return_with_leftover_noise="enable" if first else "disable")
        g.capture(out, name)
    comfy.run(g.nodes)
    return {k: comfy.captured()[k]["samples"].clone() for k in ("high", "out")}


def training_mode():
    return pack_module("nodes.runtime.autograd").training_mode()


def trainable_backend(model, clip, vae, steps: int, cfg: float, gate_start: float = 0.75, high_noise=None,
                      switch_step: int = 0, boundary: float = 0.875, up_std: float = 0.2):
    """(LoRA parameters, ComfyBackend): the trainer's pieces as the node builds them (nodes/runtime/training_run.py),
    with a trained-looking adapter (a fresh one, up = 0, changes nothing); ``high_noise``: the high-noise expert
    (``model`` the low-noise one), split at ``switch_step`` or else ``boundary`` (``backend.boundary_step``)."""
    runtime_model, backend_mod = pack_module("nodes.runtime.model"), pack_module("nodes.runtime.backend")
    split = pack_module("nodes.runtime.expert_split")
    with training_mode():
        params, gate, patched = runtime_model.attach_trainable_adapter(
            model, runtime_model.adapter_targets(model, "attention").shapes, 4, 4.0, 0, gate_start, "cpu")
        with torch.no_grad():
            gen = torch.Generator().manual_seed(3)
            for up in params.up:
                up.copy_(torch.randn(up.shape, generator=gen) * up_std)
        settings = backend_mod.ComfyBackendSettings(NEGATIVE, SIZE, SIZE, FRAMES, steps, cfg)
        expert = None if high_noise is None else split.HighNoiseExpert(high_noise, boundary, switch_step)
        backend = backend_mod.ComfyBackend(patched, gate, clip, vae, settings, expert)
    return params, backend


def trainer_rollout(backend, gate_start: float = 0.75):
    """The trainer's own ``generate`` (training/loop/trainer.py) inside the backend's run, without gradient."""
    from types import SimpleNamespace

    trainer = pack_module("training.loop.trainer")
    holder = SimpleNamespace(settings=trainer.TrainSettings(gate_start=gate_start))
    with training_mode(), torch.no_grad():
        return backend.run(PROMPT, SEED, lambda *a, **kw: trainer.Trainer.generate(holder, *a, **kw))


def save_adapter(comfy, params, name: str, gate_start: float = 0.75) -> str:
    files = pack_module("training.adapter.files")
    tensors = params.lora_state_dict()
    files.save_adapter(comfy.model_dir("loras") / name, tensors,
                       files.build_metadata(tensors, gate_start, "WAN21_T2V", expert="low_noise"))
    return name
