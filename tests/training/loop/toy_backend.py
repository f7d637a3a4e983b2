"""A toy video model, decoder, sampler and reward in plain torch for the training-loop unit tests.

Stand-ins written for the tests (no real model runs here): small enough that the loop's own guarantees can be
checked exactly and fast. The real model, VAE and ArcFace run in tests/nodes/test_trainer_comfy.py.
"""

from __future__ import annotations

import torch

from personalvideo.training.adapter.gate import step_gate_sigma
from personalvideo.training.adapter.lora import LoRAParameters
from personalvideo.training.loop.rollout import gated_rollout
from personalvideo.training.loop.trainer import TrainSettings
from personalvideo.training.prompts import PromptBank
from tests.toy_reward import cosine_identity

C, T, H, W = 4, 3, 4, 4


def euler_sample(sigmas: torch.Tensor):
    """Euler on ``sigmas`` (ComfyUI's ``sample_euler`` without churn): the toy backend's sampler."""
    def sample(model_fn, x: torch.Tensor) -> torch.Tensor:
        for i in range(int(sigmas.shape[0]) - 1):
            denoised = model_fn(x, sigmas[i])
            x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
        return x
    return sample


class ToyModel:
    """denoised = tanh(W_eff · x) per position; W_eff = W + scale·up@down when the adapter is on."""

    def __init__(self, params: LoRAParameters, seed=0, compute_dtype: torch.dtype | None = None):
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(C, C, generator=g) * 0.5  # frozen base weight
        self.params = params
        self.calls = []
        # fp16: as the diffusion model computes on cards without bf16 (--fp16-unet): the gradient crosses fp16
        # activations on its way to the (float32) adapter
        self.compute_dtype = compute_dtype

    def denoise(self, x, sigma, adapter_on):
        self.calls.append((float(sigma), adapter_on))
        w = self.weight
        if adapter_on:
            up, down = self.params.pairs()["lin.weight"]
            w = torch.addmm(w, up, down, alpha=self.params.scale)
        if self.compute_dtype is None:
            return torch.tanh(torch.einsum("oc,bcthw->bothw", w, x))
        dt = self.compute_dtype
        return torch.tanh(torch.einsum("oc,bcthw->bothw", w.to(dt), x.to(dt))).float()


class ToyBackend:
    num_frames = T

    def __init__(self, model: ToyModel, steps: int):
        self.model = model
        self.sigmas = torch.linspace(1.0, 0.0, steps + 1)
        self.proj = torch.randn(3, C, generator=torch.Generator().manual_seed(5))
        self.runs = []

    def run(self, prompt, seed, fn):
        self.runs.append((prompt, seed))
        x = torch.randn(1, C, T, H, W, generator=torch.Generator().manual_seed(seed))
        return fn(self.model.denoise, euler_sample(self.sigmas), x, self.sigmas)

    def rollout(self, x, gate_start, **kwargs):
        return gated_rollout(euler_sample(self.sigmas), self.model.denoise, x,
                             step_gate_sigma(self.sigmas, gate_start), **kwargs)

    def decode(self, latent, idx):
        frames = torch.sigmoid(torch.einsum("rc,bcthw->bthwr", self.proj, latent))[0]
        return frames[idx]


TARGET = torch.rand(H * W * 3, generator=torch.Generator().manual_seed(9))
toy_identity = cosine_identity(TARGET)


def make(steps=8, seed=0, settings=None, **kw):
    s = settings or TrainSettings(steps=steps, sampling_steps=8, learning_rate=5e-2, rank=2, alpha=2.0,
                                  frames_per_reward=2, seed=seed, save_every=2, **kw)
    params = LoRAParameters({"lin.weight": (C, C)}, s.rank, s.alpha, seed=s.seed)
    backend = ToyBackend(ToyModel(params), s.sampling_steps)
    bank = PromptBank(prompts=("a walks", "a runs", "a dances"), negative="", subject="a")
    return s, params, backend, bank
