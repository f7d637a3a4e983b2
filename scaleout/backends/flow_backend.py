"""A diffusers video model as the trainer's Backend, sampled as ComfyUI samples it (subclasses: Wan and
HunyuanVideo, flow models; AnimateDiff overrides the noise levels and the model parametrisation: eps).

Sampling follows ComfyUI's KSampler for these models step for step (flow.py: euler/simple sigmas with the model's
shift, CFG on x0, the latent (un)scaling of ComfyUI's latent formats), so a step here equals the node side's
(nodes/runtime/backend.py) on the same weights where the model code agrees. Two experts (Wan 2.2 A14B): the
high-noise expert samples steps 0..b without the adapter and hands over through the latent round trip two
KSamplerAdvanced make; the adapter trains on the low-noise expert (training/adapter/experts.py's boundary rule).
A subclass supplies the text encoding, the model call, the latent format and the VAE decode.
"""

from __future__ import annotations

import types

import torch

from ...training.adapter.experts import boundary_step, check_gate_after_boundary
from ...training.latent_geometry import LatentGeometry
from ...training.loop.block_checkpoint import checkpointed_blocks
from ...training.prompts import EncodedPrompts

from ..peft_adapter import PeftLoRA
from . import ModelSpec, flow


class FlowBackend:
    """Implements training.loop.trainer.Backend; see the module docstring."""

    checkpoint_blocks = True  # block checkpointing in gradient-carrying calls (False: plain autograd)
    block_lists: dict[str, str] = {}  # block_checkpoint's list name -> the transformer's attribute
    default_shift = 1.0

    def __init__(self, pipe, transformer, params: PeftLoRA, spec: ModelSpec, settings, device, dtype,
                 high_noise=None, boundary: float | None = None):
        if settings.sampler not in flow.SAMPLERS or settings.scheduler not in flow.SCHEDULERS:
            raise ValueError(f"sampler/scheduler: got {settings.sampler}/{settings.scheduler}, expected one of "
                             f"{flow.SAMPLERS}/{flow.SCHEDULERS} (the scale-out trainer samples as ComfyUI's "
                             "euler/simple); set sampler = 'euler' and scheduler = 'simple'")
        self.pipe, self.transformer, self.params, self.high_noise = pipe, transformer, params, high_noise
        self.device, self.dtype, self.negative, self.cfg = device, dtype, spec.negative_prompt, settings.cfg
        self.spec = spec
        self.sigmas = flow.simple_schedule(self.sigma_table(), settings.sampling_steps)
        self.geometry = LatentGeometry(transformer.config.in_channels, pipe.vae_scale_factor_spatial,
                                       pipe.vae_scale_factor_temporal)
        self.geometry.check_video_size(spec.width, spec.height, spec.num_frames)
        self.temporal = self.geometry.temporal
        self.num_frames = self.geometry.pixel_frames(spec.num_frames)
        self.latent_shape = self.geometry.latent_shape(spec.width, spec.height, spec.num_frames)
        self.prompts = EncodedPrompts(self.encode, spec.negative_prompt)  # text -> what the model call takes
        self.boundary, self.boundary_step = boundary, 0
        if high_noise is not None:
            self.boundary_step = boundary_step(map(flow.timestep_fraction, self.sigmas[:-1].tolist()), boundary)
            check_gate_after_boundary(settings.gate_start, self.boundary_step, settings.sampling_steps, boundary)

    # -- what a model family supplies ------------------------------------------------------------------
    def encode(self, text: str):
        raise NotImplementedError

    def sigma_table(self) -> torch.Tensor:
        """The model's noise levels (ComfyUI's model_sampling.sigmas); flow: shifted."""
        return flow.sigma_table(self.spec.shift or self.default_shift)

    def x0(self, transformer, x: torch.Tensor, sigma: torch.Tensor, embedding) -> torch.Tensor:
        """The model's x0 prediction at noise level ``sigma`` (flow: from its velocity)."""
        return flow.flow_x0(lambda x, t, e: self.velocity(transformer, x, t, e).float(), x, sigma, embedding)

    def start(self, sigma, noise: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """The sampler's start from ``noise`` at ``sigma`` over ``latent`` (ComfyUI's noise_scaling)."""
        return flow.noise_scaling(sigma, noise, latent)

    def finish(self, sigma, x: torch.Tensor) -> torch.Tensor:
        """ComfyUI's inverse_noise_scaling at the sampler's last ``sigma``."""
        return flow.inverse_noise_scaling(sigma, x)

    def velocity(self, transformer, x: torch.Tensor, timestep: torch.Tensor, embedding) -> torch.Tensor:
        """A flow model's output at ``timestep`` (1000·sigma)."""
        raise NotImplementedError

    def latent_in(self, z: torch.Tensor) -> torch.Tensor:  # ComfyUI's process_latent_in
        raise NotImplementedError

    def latent_out(self, x: torch.Tensor) -> torch.Tensor:  # ComfyUI's process_latent_out
        raise NotImplementedError

    def decode_video(self, z: torch.Tensor) -> torch.Tensor:
        """VAE latents [1, C, T, h, w] -> video [1, 3, F, H, W] in [-1, 1]."""
        vae = self.pipe.vae
        return vae.decode(z.to(vae.dtype), return_dict=False)[0]

    # -- text ----------------------------------------------------------------------------------------
    def encode_prompts(self, texts) -> int:
        """Encode every text (and the negative) once, before training; returns how many were new."""
        return self.prompts.encode_all(texts)

    # -- sampling ------------------------------------------------------------------------------------
    def _denoiser(self, transformer, prompt: str):
        cond, uncond = self.prompts[prompt], self.prompts[self.negative]
        return lambda x, sigma: flow.cfg(lambda e: self.x0(transformer, x, sigma, e), cond, uncond, self.cfg)

    def _after_high_noise_part(self, prompt: str, noise: torch.Tensor) -> torch.Tensor:
        """Steps 0..b by the high-noise expert (leftover noise), then the second sampler's start from there."""
        b, zeros = self.boundary_step, torch.zeros_like(noise)
        start = self.start(self.sigmas[0], noise, self.latent_in(zeros))
        if b == 0:
            return start
        with torch.no_grad():
            x = flow.euler(self._denoiser(self.high_noise, prompt), start, self.sigmas[: b + 1])
            latent = self.latent_out(self.finish(self.sigmas[b], x))
            return self.start(self.sigmas[b], zeros, self.latent_in(latent))

    def run(self, prompt: str, seed: int, fn):
        # comfy.sample.prepare_noise: CPU float32 from a generator seeded ``seed``
        noise = torch.randn(self.latent_shape, generator=torch.Generator().manual_seed(seed)).to(self.device)
        sigmas = self.sigmas.to(self.device)
        kwargs = {}
        if self.high_noise is not None:
            x = self._after_high_noise_part(prompt, noise)
            sigmas, kwargs = sigmas[self.boundary_step:], {"full_sigmas": sigmas}
        else:
            x = self.start(sigmas[0], noise, self.latent_in(torch.zeros_like(noise)))
        model = self._denoiser(self.transformer, prompt)

        def denoise(latent, sigma, adapter_on, **_):
            self.params.set_enabled(adapter_on)
            return model(latent, sigma)

        def sample(model_fn, start):
            return self.finish(sigmas[-1], flow.euler(model_fn, start, sigmas))

        blocks = types.SimpleNamespace(**{k: getattr(self.transformer, v) for k, v in self.block_lists.items()})
        try:
            with checkpointed_blocks(blocks, self.checkpoint_blocks, self.params.recompute_state):
                return fn(denoise, sample, x, sigmas, **kwargs)
        finally:
            self.params.set_enabled(True)

    def decode(self, latent: torch.Tensor, frame_indices: list[int]) -> torch.Tensor:
        """Frames as [M, H, W, 3] in [0, 1] (ComfyUI's VAE.process_output), with gradient (plain autograd
        through the latent frames the requested pixel frames depend on)."""
        last = self.geometry.last_latent_frame(frame_indices)
        return to_frames(self.decode_video(self.latent_out(latent)[:, :, : last + 1])[:, :, frame_indices])


def to_frames(video: torch.Tensor) -> torch.Tensor:
    """[1, 3, M, H, W] in [-1, 1] -> [M, H, W, 3] in [0, 1] (ComfyUI's VAE.process_output)."""
    return ((video.float() + 1.0) / 2.0).clamp(0.0, 1.0)[0].permute(1, 2, 3, 0)


def folder_model(cls, path: str, subfolder: str, dtype, empty: bool = False):
    """The ``cls`` model of a diffusers pipeline folder's ``subfolder``: its weights in ``dtype``, or with
    ``empty`` its architecture alone, parameters on ``meta`` (accelerate's init_empty_weights; buffers real)."""
    if not empty:
        return cls.from_pretrained(path, subfolder=subfolder, dtype=dtype)
    from accelerate import init_empty_weights

    with init_empty_weights():
        return cls.from_config(cls.load_config(path, subfolder=subfolder)).eval()


def folder_has(pipeline_cls, path: str, component: str) -> bool:
    """Whether the pipeline folder ``path`` holds ``component`` (its model_index.json names a class for it)."""
    entry = pipeline_cls.load_config(path).get(component)
    return isinstance(entry, (list, tuple)) and entry[0] is not None


def place(model, full, block_lists, device, dtype, tiny: bool, shard=None, adapt=None):
    """``model`` frozen on ``device``, with the adapter ``adapt(model)`` (returned; None without ``adapt``).

    ``shard`` None: ``model`` holds its weights (``prepare``). ``shard`` (the DistributedRun of a run with
    ``[compute] fsdp`` and 2+ processes): ``model`` was built empty and gets FSDP2 shards of its blocks
    (``block_lists``) from the whole copy ``full()`` that rank 0 alone loads on the CPU
    (scaleout.distributed.load_sharded). A ``model`` of None stays None.
    """
    if model is None:
        return None
    if shard is None:
        prepare((model,), device, dtype, tiny)
        return adapt(model) if adapt is not None else None
    from ..distributed import load_sharded

    def whole_on_cpu():
        copy = full()
        prepare((copy,), "cpu", dtype, tiny)
        return copy

    return load_sharded(model, whole_on_cpu, block_lists, shard, adapt)


def prepare(modules, device, dtype, tiny: bool) -> None:
    """Frozen, on ``device``; tiny models (built in float32) cast to ``dtype`` (from_pretrained loaded in it)."""
    for module in modules:
        if module is not None:
            module.requires_grad_(False).to(device).eval()
            if tiny and dtype != torch.float32:
                module.to(dtype)
