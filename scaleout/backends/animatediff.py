"""AnimateDiff (a UNetMotionModel: SD1.5's UNet with motion modules) on diffusers as the trainer's Backend.

The SD1.5 UNet predicts noise (eps), so sampling follows ComfyUI's SD1.5 path instead of the flow one: its
discrete noise levels (ModelSamplingDiscrete: scaled-linear betas 0.00085..0.012 over 1000 steps), the
``simple`` schedule over them, the model input scaled by 1/sqrt(sigma^2 + 1), the timestep the nearest
discrete one, x0 = x - sigma·eps, the start noise·sqrt(1 + sigma^2) at the largest sigma, CFG on x0, the SD1.5
latent format (scale 0.18215). Core ComfyUI has no AnimateDiff, so there is no node side to compare a step with.
The adapter covers the spatial transformer layers only (export/animatediff.py: the motion modules could not be
loaded by core ComfyUI, so they are never adapted).
"""

from __future__ import annotations

import math
import types

import torch

from ..export.animatediff import adapted_spatial_layers, export_animatediff
from ..peft_adapter import PeftLoRA
from . import ModelSpec, ScaleoutModel
from .flow_backend import FlowBackend, folder_model, place, prepare


def discrete_sigma_table(timesteps: int = 1000, start: float = 0.00085, end: float = 0.012) -> torch.Tensor:
    """ModelSamplingDiscrete.sigmas for SD1.5 (float32)."""
    betas = torch.linspace(start ** 0.5, end ** 0.5, timesteps, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).float()


class AnimateDiffBackend(FlowBackend):
    # UNet levels checkpointed as blocks (block_checkpoint.py's list names; the UNet has no ``blocks``)
    block_lists = {"blocks": "down_blocks", "single_blocks": "up_blocks"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log_sigmas = self.sigma_table().log().to(self.device)
        self.sigma_max = float(self.sigma_table()[-1])

    def sigma_table(self):
        return discrete_sigma_table()

    def encode(self, text: str) -> torch.Tensor:
        tokens = self.pipe.tokenizer(text, padding="max_length", max_length=self.spec.text_tokens, truncation=True,
                                     return_tensors="pt")
        return self.pipe.text_encoder(tokens.input_ids.to(self.device))[0].to(self.dtype)

    def x0(self, unet, x, sigma, embedding):
        s = sigma.reshape(-1, 1, 1, 1, 1)
        timestep = (sigma.log()[None, :] - self.log_sigmas[:, None]).abs().argmin(dim=0)  # nearest discrete t
        frames = x.shape[2]
        context = embedding.repeat_interleave(frames, dim=0)  # UNetMotionModel: one context per frame
        eps = unet((x / (s ** 2 + 1.0) ** 0.5).to(self.dtype), timestep, encoder_hidden_states=context).sample
        return x - eps.float() * s

    def start(self, sigma, noise, latent):
        if math.isclose(self.sigma_max, float(sigma), rel_tol=1e-5) or float(sigma) > self.sigma_max:
            return noise * torch.sqrt(1.0 + sigma ** 2.0) + latent  # ComfyUI's max_denoise start
        return noise * sigma + latent

    def finish(self, sigma, x):
        return x

    def latent_in(self, z):  # SD1.5 latent format
        return z * self.pipe.vae.config.scaling_factor

    def latent_out(self, x):
        return x / self.pipe.vae.config.scaling_factor

    def decode_video(self, z):
        frames = z[0].permute(1, 0, 2, 3)  # [F, C, h, w]: the image VAE decodes frame by frame
        video = self.pipe.vae.decode(frames.to(self.pipe.vae.dtype), return_dict=False)[0]
        return video.permute(1, 0, 2, 3)[None]


def whole_unet(spec: ModelSpec, dtype):
    """The UNet with its weights (rank 0's copy when the others are sharded)."""
    if spec.tiny:
        from .. import tiny

        return tiny.animatediff_unet(spec.seed, **spec.tiny_options)
    from diffusers import UNetMotionModel

    return folder_model(UNetMotionModel, spec.path, "unet", dtype)


def build_animatediff(spec: ModelSpec, settings, device, dtype, shard=None) -> ScaleoutModel:
    if spec.expert_boundary is not None:
        raise ValueError(f"expert_boundary: got {spec.expert_boundary:g} for AnimateDiff, which is one model; "
                         "leave it unset")
    empty = shard is not None  # FSDP2: the UNet's parameters on meta until place() loads its shards
    if spec.tiny:
        from .. import tiny

        pipe = tiny.animatediff_parts(spec.seed, empty=empty, **spec.tiny_options)
    else:
        from diffusers import AnimateDiffPipeline, UNetMotionModel

        parts = {}
        if empty:
            unet_class = AnimateDiffPipeline.load_config(spec.path).get("unet", [None, None])[1]
            if unet_class != "UNetMotionModel":
                raise ValueError(f"[compute] fsdp: {spec.path}/unet holds a {unet_class}, expected a UNetMotionModel "
                                 "(a folder that keeps UNet2DConditionModel and motion_adapter apart is joined only "
                                 "when loaded whole); save the loaded pipeline once with save_pretrained, or turn "
                                 "fsdp off (SD1.5 fits one GPU)")
            parts = {"unet": folder_model(UNetMotionModel, spec.path, "unet", dtype, empty=True)}
        pipe = AnimateDiffPipeline.from_pretrained(spec.path, dtype=dtype, **parts)
    pipe = types.SimpleNamespace(unet=pipe.unet, vae=pipe.vae, text_encoder=pipe.text_encoder,
                                 tokenizer=pipe.tokenizer, vae_scale_factor_spatial=8, vae_scale_factor_temporal=1)
    unet = pipe.unet
    prepare((pipe.text_encoder, pipe.vae), device, dtype, spec.tiny)  # small: whole on every rank

    def adapt(model):
        names = adapted_spatial_layers(model, spec.layers)
        return PeftLoRA(model, {n: n + ".weight" for n in names}, settings.rank, settings.alpha, settings.seed)

    blocks = ("down_blocks", "up_blocks")
    params = place(unet, lambda: whole_unet(spec, dtype), blocks, device, dtype, spec.tiny, shard, adapt)
    backend = AnimateDiffBackend(pipe, unet, params, spec, settings, device, dtype)
    return ScaleoutModel(backend=backend, params=params, transformer=unet,
                         exporter=lambda p: export_animatediff(p.module_pairs(), p.alpha), base_model="SD15",
                         gate_start=settings.gate_start, block_lists=blocks)
