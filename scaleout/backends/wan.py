"""Wan 2.1 / 2.2 on diffusers (WanPipeline's parts) as the trainer's Backend.

Sampling follows ComfyUI's KSampler for Wan step for step (flow.py: euler/simple sigmas with the model's shift,
CFG on x0, the latent (un)scaling), so a step here equals the node side's (nodes/train_backend.py) on the same
weights. Wan 2.2 A14B (a pipeline with ``transformer`` = high-noise and ``transformer_2`` = low-noise expert): the
high-noise expert samples steps 0..b without the adapter and hands over through the latent round trip two
KSamplerAdvanced make; the adapter trains on the low-noise expert (nodes/expert_split.py's boundary rule).
"""

from __future__ import annotations

import logging
import types

import torch

from training.adapter.gate import first_gated_step
from training.loop.block_checkpoint import checkpointed_blocks

from ..export.wan import export_wan, native_key
from ..peft_adapter import PeftLoRA
from . import ModelSpec, ScaleoutModel, flow

log = logging.getLogger(__name__)
DEFAULT_SHIFT = 8.0  # ComfyUI's WAN21_T2V / WAN22_T2V sampling_settings (a ModelSamplingSD3 node changes it)
DEFAULT_BOUNDARY = 0.875  # Wan 2.2 T2V A14B's official expert boundary


def lora_targets(transformer: torch.nn.Module, layers: str) -> dict[str, str]:
    """{diffusers module: native weight key} of the linear layers in the blocks the node side adapts
    (nodes/train_nodes.py: attention projections, or those and the MLPs), judged on the native names."""
    targets = {}
    for name, module in transformer.named_modules():
        if not isinstance(module, torch.nn.Linear) or not name.startswith("blocks."):
            continue
        key = native_key(name)
        native = key.lower()
        if "attn" in native or (layers == "attention+mlp" and any(t in native for t in ("mlp", "ffn", "linear"))):
            targets[name] = key
    return targets


class WanBackend:
    """Implements training.loop.trainer.Backend on a diffusers Wan transformer + VAE + text encoder."""

    def __init__(self, pipe, transformer, params: PeftLoRA, spec: ModelSpec, settings, device, dtype,
                 high_noise=None, boundary: float | None = None):
        if settings.sampler not in flow.SAMPLERS or settings.scheduler not in flow.SCHEDULERS:
            raise ValueError(f"sampler/scheduler: got {settings.sampler}/{settings.scheduler}, expected one of "
                             f"{flow.SAMPLERS}/{flow.SCHEDULERS} (the scale-out trainer samples as ComfyUI's "
                             "euler/simple); set sampler = 'euler' and scheduler = 'simple'")
        self.pipe, self.transformer, self.params, self.high_noise = pipe, transformer, params, high_noise
        self.device, self.dtype, self.negative, self.cfg = device, dtype, spec.negative_prompt, settings.cfg
        self.text_tokens = spec.text_tokens
        self.sigmas = flow.simple_sigmas(spec.shift or DEFAULT_SHIFT, settings.sampling_steps)
        spatial, temporal = pipe.vae_scale_factor_spatial, pipe.vae_scale_factor_temporal
        self.temporal = temporal
        latent_frames = (spec.num_frames - 1) // temporal + 1
        self.num_frames = (latent_frames - 1) * temporal + 1
        self.latent_shape = (1, transformer.config.in_channels, latent_frames, spec.height // spatial,
                             spec.width // spatial)
        vae = pipe.vae.config
        shape = (1, vae.z_dim, 1, 1, 1)
        self.latents_mean = torch.tensor(vae.latents_mean, dtype=torch.float32).view(shape).to(device)
        self.latents_std = torch.tensor(vae.latents_std, dtype=torch.float32).view(shape).to(device)
        self.text_embeddings: dict[str, torch.Tensor] = {}  # text -> [1, tokens, text_dim] (fill to override)
        self.boundary_step = 0
        if high_noise is not None:
            self.boundary_step = flow.boundary_step(self.sigmas, boundary)
            g = first_gated_step(settings.sampling_steps, settings.gate_start)
            if g < self.boundary_step:
                raise ValueError(f"gate_start: got {settings.gate_start:g}, which opens the gate at step {g} of "
                                 f"{settings.sampling_steps}, but steps 0-{self.boundary_step - 1} belong to the "
                                 f"high-noise expert (expert_boundary {boundary:g}); expected gate_start >= "
                                 f"{self.boundary_step / settings.sampling_steps:g}: raise gate_start or the boundary")

    # -- text ----------------------------------------------------------------------------------------
    def encode_prompts(self, texts) -> int:
        """Encode every text (and the negative) once, before training; returns how many were new."""
        todo = [t for t in dict.fromkeys([*texts, self.negative]) if t not in self.text_embeddings]
        with torch.no_grad():
            for text in todo:
                embeds, _ = self.pipe.encode_prompt(text, do_classifier_free_guidance=False,
                                                    max_sequence_length=self.text_tokens, device=self.device)
                self.text_embeddings[text] = embeds.to(self.dtype)
        return len(todo)

    def _embedding(self, text: str) -> torch.Tensor:
        if text not in self.text_embeddings:
            self.encode_prompts([text])
        return self.text_embeddings[text]

    # -- latents (ComfyUI's Wan21 latent format: process_latent_in/out) ---------------------------------
    def latent_in(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.latents_mean) / self.latents_std

    def latent_out(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.latents_std + self.latents_mean

    # -- sampling ------------------------------------------------------------------------------------
    def _denoiser(self, transformer, prompt: str):
        cond, uncond = self._embedding(prompt), self._embedding(self.negative)

        def velocity(x, timestep, embedding):
            out = transformer(x.to(self.dtype), timestep=timestep, encoder_hidden_states=embedding,
                              return_dict=False)[0]
            return out.float()

        return lambda x, sigma: flow.cfg_denoised(velocity, x, sigma, cond, uncond, self.cfg)

    def _after_high_noise_part(self, prompt: str, noise: torch.Tensor) -> torch.Tensor:
        """Steps 0..b by the high-noise expert (leftover noise), then the second sampler's start from there."""
        b = self.boundary_step
        zeros = torch.zeros_like(noise)
        if b == 0:
            return flow.noise_scaling(self.sigmas[0], noise, self.latent_in(zeros))
        with torch.no_grad():
            x = flow.noise_scaling(self.sigmas[0], noise, self.latent_in(zeros))
            x = flow.euler(self._denoiser(self.high_noise, prompt), x, self.sigmas[: b + 1])
            latent = self.latent_out(flow.inverse_noise_scaling(self.sigmas[b], x))
            return flow.noise_scaling(self.sigmas[b], zeros, self.latent_in(latent))

    def run(self, prompt: str, seed: int, fn):
        noise = torch.randn(self.latent_shape, generator=torch.Generator().manual_seed(seed)).to(self.device)
        sigmas = self.sigmas.to(self.device)
        kwargs = {}
        if self.high_noise is not None:
            x = self._after_high_noise_part(prompt, noise)
            sigmas, kwargs = sigmas[self.boundary_step:], {"full_sigmas": sigmas}
        else:
            x = flow.noise_scaling(sigmas[0], noise, self.latent_in(torch.zeros_like(noise)))
        model = self._denoiser(self.transformer, prompt)

        def denoise(latent, sigma, adapter_on, **_):
            self.params.set_enabled(adapter_on)
            return model(latent, sigma)

        def sample(model_fn, start):
            return flow.inverse_noise_scaling(sigmas[-1], flow.euler(model_fn, start, sigmas))

        blocks = types.SimpleNamespace(blocks=self.transformer.blocks)  # block_checkpoint looks for ``blocks``
        try:
            with checkpointed_blocks(blocks, True, self.params.recompute_state):
                return fn(denoise, sample, x, sigmas, **kwargs)
        finally:
            self.params.set_enabled(True)

    def decode(self, latent: torch.Tensor, frame_indices: list[int]) -> torch.Tensor:
        """Frames as [M, H, W, 3] in [0, 1] (ComfyUI's VAE.process_output), with gradient (plain autograd
        through the latent frames the requested pixel frames depend on)."""
        last = max(0 if f == 0 else (f - 1) // self.temporal + 1 for f in frame_indices)
        z = self.latent_out(latent)[:, :, : last + 1]
        vae = self.pipe.vae
        video = vae.decode(z.to(vae.dtype), return_dict=False)[0][:, :, frame_indices]
        return ((video.float() + 1.0) / 2.0).clamp(0.0, 1.0)[0].permute(1, 2, 3, 0)


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
    for module in (pipe.text_encoder, pipe.vae, low, high):
        if module is not None:
            module.requires_grad_(False).to(device).eval()
            if spec.tiny and dtype != torch.float32:  # from_pretrained loaded the others in dtype already
                module.to(dtype)
    params = PeftLoRA(low, lora_targets(low, spec.layers), settings.rank, settings.alpha, settings.seed)
    backend = WanBackend(pipe, low, params, spec, settings, device, dtype, high, boundary)
    return ScaleoutModel(backend=backend, params=params, transformer=low,
                         exporter=lambda p: export_wan(p.module_pairs(), p.alpha),
                         base_model="WAN22_T2V" if low.config.in_channels == 48 else "WAN21_T2V",
                         gate_start=settings.gate_start, expert="low_noise" if high is not None else "",
                         block_lists=("blocks",))
