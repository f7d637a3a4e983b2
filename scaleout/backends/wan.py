"""Wan 2.1 / 2.2 on diffusers (WanPipeline's parts) as the trainer's Backend (flow_backend.py does the sampling;
Wan 2.2 A14B: a pipeline with ``transformer`` = high-noise and ``transformer_2`` = low-noise expert)."""

from __future__ import annotations

import logging

import torch

from ..export import adapted_modules
from ..export.wan import export_wan, native_key
from ..peft_adapter import PeftLoRA
from . import ModelSpec, ScaleoutModel
from .flow_backend import FlowBackend, prepare

log = logging.getLogger(__name__)
DEFAULT_SHIFT = 8.0  # ComfyUI's WAN21_T2V / WAN22_T2V sampling_settings (a ModelSamplingSD3 node changes it)
DEFAULT_BOUNDARY = 0.875  # Wan 2.2 T2V A14B's official expert boundary


def lora_targets(transformer: torch.nn.Module, layers: str) -> dict[str, str]:
    """{diffusers module: native weight key} of the layers the node side adapts (keys as the node's adapter's)."""
    return {name: native_key(name) for name in adapted_modules(transformer, layers, native_key, ("blocks.",))}


class WanBackend(FlowBackend):
    """Wan 2.1 / 2.2 (WanPipeline's parts): UMT5 text, ComfyUI's Wan21 latent format (per-channel mean/std)."""

    block_lists = {"blocks": "blocks"}
    default_shift = DEFAULT_SHIFT

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        vae = self.pipe.vae.config
        shape = (1, vae.z_dim, 1, 1, 1)
        self.latents_mean = torch.tensor(vae.latents_mean, dtype=torch.float32).view(shape).to(self.device)
        self.latents_std = torch.tensor(vae.latents_std, dtype=torch.float32).view(shape).to(self.device)

    def encode(self, text: str) -> torch.Tensor:
        embeds, _ = self.pipe.encode_prompt(text, do_classifier_free_guidance=False,
                                            max_sequence_length=self.spec.text_tokens, device=self.device)
        return embeds.to(self.dtype)

    def velocity(self, transformer, x, timestep, embedding):
        return transformer(x.to(self.dtype), timestep=timestep, encoder_hidden_states=embedding,
                           return_dict=False)[0]

    def latent_in(self, z):
        return (z - self.latents_mean) / self.latents_std

    def latent_out(self, x):
        return x * self.latents_std + self.latents_mean


def load_pipeline(spec: ModelSpec, dtype):
    if spec.tiny:
        from .. import tiny

        two = spec.expert_boundary is not None
        return tiny.wan_pipeline(spec.seed, two_experts=two, boundary=spec.expert_boundary, **spec.tiny_options)
    from diffusers import WanPipeline

    return WanPipeline.from_pretrained(spec.path, torch_dtype=dtype)


def build_wan(spec: ModelSpec, settings, device, dtype) -> ScaleoutModel:
    pipe = load_pipeline(spec, dtype)
    high, low = (pipe.transformer, pipe.transformer_2) if pipe.transformer_2 is not None else (None, pipe.transformer)
    boundary = None
    if high is not None:
        boundary = spec.expert_boundary or getattr(pipe.config, "boundary_ratio", None) or DEFAULT_BOUNDARY
    prepare((pipe.text_encoder, pipe.vae, low, high), device, dtype, spec.tiny)
    params = PeftLoRA(low, lora_targets(low, spec.layers), settings.rank, settings.alpha, settings.seed)
    backend = WanBackend(pipe, low, params, spec, settings, device, dtype, high, boundary)
    return ScaleoutModel(backend=backend, params=params, transformer=low,
                         exporter=lambda p: export_wan(p.module_pairs(), p.alpha),
                         base_model="WAN22_T2V" if low.config.in_channels == 48 else "WAN21_T2V",
                         gate_start=settings.gate_start, expert="low_noise" if high is not None else "",
                         block_lists=("blocks",))
