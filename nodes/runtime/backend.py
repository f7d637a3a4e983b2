"""The trainer's view of a ComfyUI MODEL / CLIP / VAE (implements training.loop.trainer.Backend).

Sampling goes through ComfyUI's own machinery, so conditioning, CFG, model_sampling, wrappers, the sigma
schedule and the sampler's arithmetic are exactly what KSampler uses: ``comfy.samplers.CFGGuider`` with a
custom ``KSAMPLER`` function in which the training step (rollout, decode, rewards, backward) runs while
the model is loaded; inside it the user's sampler function runs twice (source and tuned runs, see
training/loop/rollout.py). The two runs switch the same ``IdentityGate`` the apply node uses (``gate.forced``).
What the run samples and decodes is one frozen ``ComfyBackendSettings``, given at construction.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

import comfy.model_management as mm
import comfy.sample
import comfy.samplers

from ...training.devices import to_reward_device
from ...training.loop.block_checkpoint import checkpointed_blocks
from ...training.loop.causal_decode import DECODE_MODES
from ...training.loop.inplace_safety import norm_inputs_copied
from ...training.prompts import EncodedPrompts
from .attention import use_differentiable_attention
from .autograd import make_trainable, weight_function_state
from .expert_split import HighNoiseExpert
from .gate import IdentityGate
from .latent_geometry import latent_geometry
from .memory import reserve_training_memory
from .residual_readers import residual_readers_copied
from .vae_decode import causal_vae_frames, decodes_causally
from .weight_path import same_weight_path
from ...training.logs import pack_logger

log = pack_logger(__name__)

# Samplers a training run can use: each is checked in tests/nodes/test_trainer_samplers.py (the source and tuned
# runs equal KSampler without and with the apply node; the gradient matches finite differences). Others are not
# checked, and some cannot train: euler_ancestral on flow models hands over to a no_grad-decorated helper, which
# cuts the gradient (training/loop/rollout.py would stop with an error).
TRAINING_SAMPLERS = ("euler", "heun", "dpmpp_2m", "uni_pc", "uni_pc_bh2", "ddim")


@dataclass(frozen=True)
class ComfyBackendSettings:
    """What a training run samples and decodes (the trainer node's inputs), fixed for the run."""

    negative: str  # the negative prompt of every step
    width: int
    height: int
    frames: int  # pixel frames requested: the VAE's rule (e.g. 4k+1) is checked against the model's geometry
    sampling_steps: int
    cfg: float
    checkpoint_blocks: bool = True  # recompute each transformer block in backward (one block's activations)
    sampler: str = "euler"
    scheduler: str = "simple"
    # How the reward frames' decode carries the gradient (training/loop/causal_decode.py: "checkpointed" exact and
    # bounded, "truncated" approximate and least, "plain" the whole decode graph).
    decode_gradient: str = "checkpointed"
    # Where the decoded frames go: the reward models' device (None: ComfyUI's torch device, where the node puts them).
    reward_device: torch.device | str | None = None

    def __post_init__(self):
        if self.sampler not in TRAINING_SAMPLERS:
            raise ValueError(f"sampler: got {self.sampler!r}, expected one of {TRAINING_SAMPLERS}")
        if self.scheduler not in comfy.samplers.SCHEDULER_NAMES:
            raise ValueError(f"scheduler: got {self.scheduler!r}, expected one of {comfy.samplers.SCHEDULER_NAMES}")
        if self.decode_gradient not in DECODE_MODES:
            raise ValueError(f"decode_gradient: got {self.decode_gradient!r}, expected one of {DECODE_MODES}")


def encode(clip, text: str):
    """CONDITIONING for ``text``, as core CLIPTextEncode makes it."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def conditioning_to(cond, device):
    """CONDITIONING with every tensor (embeddings, pooled output, ...) moved to ``device``."""
    def move(v):
        return v.to(device) if isinstance(v, torch.Tensor) else v
    return [[move(t), {k: move(v) for k, v in extra.items()}] for t, extra in cond]


def release_model(patcher) -> bool:
    """Unload ``patcher``'s model from the device now (ComfyUI would otherwise keep it until memory runs short).
    Returns whether it was loaded."""
    for i, loaded in enumerate(mm.current_loaded_models):
        if loaded.model is patcher:
            loaded.model_unload()
            mm.current_loaded_models.pop(i)
            mm.soft_empty_cache()
            return True
    return False


class _SamplerModel:
    """What a sampler function calls: ``model(x, sigma, **extra_args)`` goes to ``model_fn``; anything else the
    sampler reads (``inner_model``, ...) comes from ComfyUI's model wrapper."""

    def __init__(self, comfy_model, model_fn):
        self._comfy_model, self._model_fn = comfy_model, model_fn

    def __call__(self, x, sigma, **kwargs):
        return self._model_fn(x, sigma, **kwargs)

    def __getattr__(self, name):
        return getattr(self._comfy_model, name)


class ComfyBackend:
    def __init__(self, patcher, gate: IdentityGate, clip, vae, settings: ComfyBackendSettings,
                 high_noise: HighNoiseExpert | None = None):
        """``high_noise``: Wan 2.2 A14B's high-noise expert, which samples the steps before the expert boundary
        (``patcher`` is then the low-noise expert); a gate start in the high-noise steps is refused here."""
        s = self.settings = settings
        self.patcher, self.gate, self.clip, self.vae = patcher, gate, clip, vae
        self.geometry = latent_geometry(patcher, vae)  # channels, spatial and temporal compression
        self.geometry.check_video_size(s.width, s.height, s.frames)  # e.g. LTX-Video: 8k+1 frames, multiples of 32
        self.latent_frames = self.geometry.latent_frames(s.frames)
        self.num_frames = self.geometry.pixel_frames(s.frames)
        self.latent_shape = self.geometry.latent_shape(s.width, s.height, s.frames)
        device = mm.intermediate_device()  # CPU: samplers move the conditioning per call
        self.prompts = EncodedPrompts(lambda text: conditioning_to(encode(clip, text), device), s.negative)
        self.high_noise, self.boundary_step = high_noise, 0
        if high_noise is not None:  # refuses a gate start in the high-noise steps, before any step
            self.boundary_step, num_steps = high_noise.split_step(patcher, s.sampling_steps, s.sampler, s.scheduler)
            high_noise.check_gate(gate.gate_start, self.boundary_step, num_steps)
        self.attention = use_differentiable_attention(patcher)  # sage/flash have no backward
        make_trainable(patcher.model, patcher.model.latent_format)
        make_trainable(vae.first_stage_model)
        # ComfyUI loads the model leaving room for backward, not only for a forward (nodes/runtime/memory.py)
        reserve_training_memory(patcher, s.checkpoint_blocks)

    @property
    def decode_gradient(self) -> str:
        """The decode's gradient mode (the trainer names it when memory runs out)."""
        return self.settings.decode_gradient

    def encode_prompts(self, texts) -> int:
        """Encode every text (the bank's prompts and the negative) once, before training, and unload the text
        encoder: a multi-GB encoder is not loaded again mid-run. Returns how many texts were encoded."""
        count = self.prompts.encode_all(texts)
        if getattr(self.clip, "patcher", None) is not None and release_model(self.clip.patcher):
            log.info("PersonalVideo training: %d prompts encoded; text encoder unloaded for the run", count)
        return count

    def run(self, prompt: str, seed: int, fn):
        latent = torch.zeros(self.latent_shape)
        noise = comfy.sample.prepare_noise(latent, seed)
        # KSampler's schedule (it adds and drops a step for uni_pc and dpm_2).
        s = self.settings
        sigmas = comfy.samplers.KSampler(self.patcher, s.sampling_steps, self.patcher.load_device,
                                         sampler=s.sampler, scheduler=s.scheduler, denoise=1.0).sigmas
        if self.high_noise is not None:  # Wan 2.2 A14B: the template's two sampler calls (expert_split.py)
            latent, noise, sigmas, full_sigmas = self._after_high_noise_part(prompt, seed, noise, latent, sigmas)
            fn = functools.partial(fn, full_sigmas=full_sigmas)
        sampler = comfy.samplers.sampler_object(s.sampler)
        model_sampling = self.patcher.get_model_object("model_sampling")
        # k-diffusion's samplers are decorated with no_grad; the undecorated function is differentiable.
        sampler_function = getattr(sampler.sampler_function, "__wrapped__", sampler.sampler_function)
        guider = comfy.samplers.CFGGuider(self.patcher)
        guider.set_conds(self.prompts[prompt], self.prompts[s.negative])
        guider.set_cfg(s.cfg)
        result = {}

        def training_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None):
            extra_args = extra_args or {}

            def denoise(latent, sigma, adapter_on, **kwargs):
                with self.gate.forced(adapter_on):
                    return model(latent, sigma, **kwargs)

            def sample(model_fn, start):
                """One run of the sampler, finished as ``KSAMPLER.sample`` finishes it."""
                run_sigmas = sigmas.clone()  # uni_pc writes into the schedule it gets (its last sigma)
                out = sampler_function(_SamplerModel(model, model_fn), start, run_sigmas, extra_args=extra_args,
                                       callback=None, disable=True, **sampler.extra_options)
                return model_sampling.inverse_noise_scaling(run_sigmas[-1], out)

            diffusion_model = self.patcher.model.diffusion_model
            with norm_inputs_copied(diffusion_model), residual_readers_copied(diffusion_model), \
                    same_weight_path(self.patcher, self.gate.deltas), \
                    checkpointed_blocks(diffusion_model, s.checkpoint_blocks, weight_function_state):
                result["out"] = fn(denoise, sample, x, sigmas)
            return x

        guider.sample(noise, latent, comfy.samplers.KSAMPLER(training_sampler), sigmas, seed=seed,
                      disable_pbar=True)
        return result["out"]

    def _after_high_noise_part(self, prompt, seed, noise, latent, sigmas):
        """The first KSamplerAdvanced (high-noise expert, steps 0..b, leftover noise); returns what the second
        one (low-noise expert, add_noise off) starts from: its latent, zero noise, the schedule from b, and
        the full schedule for the trainer's gate (global step ceil(gate_start·N))."""
        b, s = self.boundary_step, self.settings
        latent = self.high_noise.high_noise_part(noise, latent, self.prompts[prompt], self.prompts[s.negative], s.cfg,
                                                 s.sampling_steps, s.sampler, s.scheduler, b, seed)
        noise = torch.zeros(latent.size(), dtype=latent.dtype, layout=latent.layout, device="cpu")
        return latent, noise, sigmas[b:], sigmas

    def decode(self, latent: torch.Tensor, frame_indices: list[int]) -> torch.Tensor:
        """Frames ``frame_indices`` as [M, H, W, 3] in [0, 1] on the reward device, with gradient. With a causal VAE
        (Wan's, CogVideoX's) only the latent frames the requested pixel frames depend on are decoded, other VAEs
        decode the whole latent; Wan's latent frame by latent frame as ``decode_gradient`` says, others at once,
        with plain autograd."""
        latent = self.patcher.model.process_latent_out(latent)
        last = self.geometry.last_latent_frame(frame_indices)
        if not decodes_causally(self.vae.first_stage_model):  # e.g. LTX-Video: frames see later latent frames
            last = latent.shape[2] - 1
        # The diffusion model is listed too: backward recomputes its checkpointed calls after this decode, so
        # making room for the VAE must not unload it (ComfyUI then loads what fits, the rest cast per layer).
        mm.load_models_gpu([self.patcher, self.vae.patcher])
        z = latent[:, :, : last + 1].to(self.vae.device, self.vae.vae_dtype)
        vae_model = self.vae.first_stage_model
        picked = None
        # The source video (no gradient) is walked too: the same arithmetic as the tuned one, so a fresh adapter
        # scores the base exactly (on ComfyUI 0.33 the walk and Wan's own pairwise decode differ by float rounding).
        if self.decode_gradient != "plain":
            picked = causal_vae_frames(vae_model, z, frame_indices, self.decode_gradient)  # [1, 3, M, H, W]
        if picked is None:  # plain asked for, or a VAE that is not walked per latent frame
            picked = vae_model.decode(z)[:, :, frame_indices]  # [1, 3, F, H, W] in [-1, 1]
        frames = self.vae.process_output(picked.float())[0].permute(1, 2, 3, 0)  # [M, H, W, 3]
        return to_reward_device(frames, self.settings.reward_device or mm.get_torch_device())
