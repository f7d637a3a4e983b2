"""HunyuanVideo (1.0 T2V) on diffusers (HunyuanVideoPipeline's parts) as the trainer's Backend.

Sampled as ComfyUI samples it (flow_backend.py: euler/simple, shift 7 as ComfyUI's HunyuanVideo model config, the
embedded guidance ``spec.guidance`` as FluxGuidance sets it, CFG ``settings.cfg``: 1 in ComfyUI's template).
Base outputs of diffusers' and ComfyUI's HunyuanVideo differ (~5e-2 on converted weights, cause not found), so
this backend is not compared with the node side step for step; its export is checked at the weight level
(tests/scaleout/test_export_hunyuan.py). The adapter is named by diffusers' module names (the native layers
fuse q/k/v, so one native name covers several trained layers); export/hunyuan.py fuses them exactly.
"""

from __future__ import annotations

import torch

from ..export import native_targets
from ..export.hunyuan import export_hunyuan, native_key, native_target
from ..peft_adapter import PeftLoRA
from . import ModelSpec, ScaleoutModel
from .flow_backend import FlowBackend, folder_model, place, prepare

DEFAULT_SHIFT = 7.0  # ComfyUI's HunyuanVideo sampling_settings
BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks")
BLOCK_PREFIXES = tuple(name + "." for name in BLOCK_LISTS)
TINY_TEMPLATE = {"template": "{}", "crop_start": 0}  # the tiny tokenizer does not know Llama's chat tokens


class HunyuanBackend(FlowBackend):
    block_lists = {"double_blocks": "transformer_blocks", "single_blocks": "single_transformer_blocks"}
    default_shift = DEFAULT_SHIFT

    def encode(self, text: str):
        kwargs = {"prompt_template": TINY_TEMPLATE} if self.spec.tiny else {}
        embeds, pooled, mask = self.pipe.encode_prompt(text, max_sequence_length=self.spec.text_tokens,
                                                       device=self.device, **kwargs)
        return embeds.to(self.dtype), pooled.to(self.dtype), mask

    def velocity(self, transformer, x, timestep, embedding):
        embeds, pooled, mask = embedding
        guidance = None
        if transformer.config.guidance_embeds:
            guidance = torch.full((x.shape[0],), self.spec.guidance * 1000.0, device=x.device, dtype=self.dtype)
        return transformer(hidden_states=x.to(self.dtype), timestep=timestep, encoder_hidden_states=embeds,
                           encoder_attention_mask=mask, pooled_projections=pooled, guidance=guidance,
                           return_dict=False)[0]

    def latent_in(self, z):  # ComfyUI's HunyuanVideo latent format: a scale factor only
        return z * self.pipe.vae.config.scaling_factor

    def latent_out(self, x):
        return x / self.pipe.vae.config.scaling_factor


def exporter(transformer: torch.nn.Module):
    """params -> native tensors, with the widths of every member of the fused layers (zero rows)."""
    modules = dict(transformer.named_modules())

    def export(params: PeftLoRA) -> dict[str, torch.Tensor]:
        members = {m for name in params.module_pairs() for m in native_target(name)[2]}
        return export_hunyuan(params.module_pairs(), params.alpha, {m: modules[m].out_features for m in members})

    return export


def whole_transformer(spec: ModelSpec, dtype):
    """The transformer with its weights (rank 0's copy when the others are sharded)."""
    if spec.tiny:
        from .. import tiny

        return tiny.hunyuan_transformer(spec.seed, **spec.tiny_options)
    from diffusers import HunyuanVideoTransformer3DModel

    return folder_model(HunyuanVideoTransformer3DModel, spec.path, "transformer", dtype)


def build_hunyuan(spec: ModelSpec, settings, device, dtype, shard=None) -> ScaleoutModel:
    if spec.expert_boundary is not None:
        raise ValueError(f"expert_boundary: got {spec.expert_boundary:g} for HunyuanVideo, which is one model; "
                         "leave it unset")
    empty = shard is not None  # FSDP2: the transformer's parameters on meta until place() loads its shards
    if spec.tiny:
        from .. import tiny

        pipe = tiny.hunyuan_pipeline(spec.seed, empty=empty, **spec.tiny_options)
    else:
        from diffusers import HunyuanVideoPipeline, HunyuanVideoTransformer3DModel

        parts = {"transformer": folder_model(HunyuanVideoTransformer3DModel, spec.path, "transformer", dtype,
                                             empty=True)} if empty else {}
        pipe = HunyuanVideoPipeline.from_pretrained(spec.path, dtype=dtype, **parts)
    transformer = pipe.transformer
    prepare((pipe.text_encoder, pipe.text_encoder_2, pipe.vae), device, dtype, spec.tiny)  # whole on every rank

    # the trainer node's layers on ComfyUI's HunyuanVideo (the single blocks' linear1/linear2 included), chosen by
    # name (also on an empty model) before peft wraps them
    chosen, modules = native_targets(transformer, "HunyuanVideo", spec.layers, native_key, BLOCK_PREFIXES)

    def adapt(model):
        return PeftLoRA(model, {n: n + ".weight" for n in modules}, settings.rank, settings.alpha, settings.seed)

    params = place(transformer, lambda: whole_transformer(spec, dtype), BLOCK_LISTS, device, dtype, spec.tiny, shard,
                   adapt)
    backend = HunyuanBackend(pipe, transformer, params, spec, settings, device, dtype)
    return ScaleoutModel(backend=backend, params=params, transformer=transformer, exporter=exporter(transformer),
                         base_model="HunyuanVideo", gate_start=settings.gate_start, block_lists=BLOCK_LISTS,
                         adapted=chosen.describe())
