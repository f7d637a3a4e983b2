"""Wan 2.1 / 2.2 on diffusers (WanPipeline's parts) as the trainer's Backend (flow_backend.py does the sampling;
Wan 2.2 A14B: a pipeline with ``transformer`` = high-noise and ``transformer_2`` = low-noise expert)."""

from __future__ import annotations

import torch

from ...training.adapter.experts import DEFAULT_BOUNDARY
from ..export import native_targets
from ..export.wan import export_wan, native_key
from ..peft_adapter import PeftLoRA
from . import ModelSpec, ScaleoutModel
from .flow_backend import FlowBackend, folder_has, folder_model, place, prepare, to_frames
from .wan_decode import wan_vae_frames
from ...training.logs import pack_logger

log = pack_logger(__name__)
DEFAULT_SHIFT = 8.0  # ComfyUI's WAN21_T2V / WAN22_T2V sampling_settings (a ModelSamplingSD3 node changes it)


def family_of(transformer: torch.nn.Module) -> str:
    """ComfyUI's family of a Wan transformer: WAN22_T2V for 2.2 TI2V-5B (48 latent channels), else WAN21_T2V (2.1 and
    each 2.2 A14B expert, as ComfyUI loads them)."""
    return "WAN22_T2V" if transformer.config.in_channels == 48 else "WAN21_T2V"


def lora_targets(transformer: torch.nn.Module, layers: str):
    """(targets, {diffusers module: native weight key}): the layers the trainer node adapts on the same model in
    ComfyUI (keys as the node's adapter's)."""
    return native_targets(transformer, family_of(transformer), layers, native_key, ("blocks.",))


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

    # How the decode carries the gradient (training/loop/causal_decode.py): "checkpointed" (exact, one latent
    # frame's activations at a time, the node side's default), "truncated" (approximate, least), "plain".
    decode_gradient = "checkpointed"

    def decode(self, latent: torch.Tensor, frame_indices: list[int]) -> torch.Tensor:
        if not torch.is_grad_enabled() or self.decode_gradient == "plain":
            return super().decode(latent, frame_indices)
        z = self.latent_out(latent)
        return to_frames(wan_vae_frames(self.pipe.vae, z, frame_indices, self.temporal, self.decode_gradient))


def load_pipeline(spec: ModelSpec, dtype, empty: bool = False):
    """The pipeline of ``spec``; ``empty``: its transformers' parameters on meta (FSDP2 loads them: ``place``)."""
    two = spec.expert_boundary is not None
    if spec.tiny:
        from .. import tiny

        return tiny.wan_pipeline(spec.seed, two_experts=two, boundary=spec.expert_boundary, empty=empty,
                                 **spec.tiny_options)
    from diffusers import WanPipeline, WanTransformer3DModel

    if not empty:
        return WanPipeline.from_pretrained(spec.path, dtype=dtype)
    names = [n for n in ("transformer", "transformer_2") if folder_has(WanPipeline, spec.path, n)]
    return WanPipeline.from_pretrained(spec.path, dtype=dtype, **{
        n: folder_model(WanTransformer3DModel, spec.path, n, dtype, empty=True) for n in names})


def whole_transformer(spec: ModelSpec, name: str, dtype):
    """The pipeline's transformer ``name`` with its weights (rank 0's copy when the others are sharded)."""
    if spec.tiny:
        from .. import tiny

        high_noise = name == "transformer" and spec.expert_boundary is not None  # seeded seed + 1
        return tiny.wan_transformer(spec.seed + high_noise, **spec.tiny_options)
    from diffusers import WanTransformer3DModel

    return folder_model(WanTransformer3DModel, spec.path, name, dtype)


def build_wan(spec: ModelSpec, settings, device, dtype, shard=None) -> ScaleoutModel:
    pipe = load_pipeline(spec, dtype, empty=shard is not None)
    high, low = (pipe.transformer, pipe.transformer_2) if pipe.transformer_2 is not None else (None, pipe.transformer)
    boundary = None
    if high is None and spec.expert_boundary is not None:
        raise ValueError(f"expert_boundary: got {spec.expert_boundary:g}, but {spec.path} holds one Wan model (no "
                         "transformer_2); leave it unset, or point path at a Wan 2.2 A14B pipeline folder")
    if high is not None:
        boundary = spec.expert_boundary or getattr(pipe.config, "boundary_ratio", None) or DEFAULT_BOUNDARY
    prepare((pipe.text_encoder, pipe.vae), device, dtype, spec.tiny)  # small: whole on every rank

    chosen, modules = lora_targets(low, spec.layers)  # by name (also on an empty model), before peft wraps them

    def adapt(model):
        return PeftLoRA(model, modules, settings.rank, settings.alpha, settings.seed)

    low_name = "transformer_2" if high is not None else "transformer"
    params = place(low, lambda: whole_transformer(spec, low_name, dtype), ("blocks",), device, dtype, spec.tiny,
                   shard, adapt)
    place(high, lambda: whole_transformer(spec, "transformer", dtype), ("blocks",), device, dtype, spec.tiny, shard)
    backend = WanBackend(pipe, low, params, spec, settings, device, dtype, high, boundary)
    return ScaleoutModel(backend=backend, params=params, transformer=low,
                         exporter=lambda p: export_wan(p.module_pairs(), p.alpha),
                         base_model=family_of(low), adapted=chosen.describe(),
                         gate_start=settings.gate_start, expert="low_noise" if high is not None else "",
                         expert_boundary=boundary,
                         block_lists=("blocks",))
