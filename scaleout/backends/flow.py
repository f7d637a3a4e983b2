"""Flow-matching sampling as ComfyUI does it for Wan (ModelSamplingDiscreteFlow + CONST, euler/simple, CFG).

The same arithmetic, step for step, as ComfyUI's k-diffusion ``sample_euler`` over ``simple_scheduler``'s sigmas
(so the diffusers backend's videos equal the node side's to float rounding:
tests/scaleout/test_backend_wan_equals_comfy.py):
the model predicts a velocity v, the sampler works on x0 = x - sigma·v, and one Euler step is
x + (x - x0)/sigma · (sigma_next - sigma). diffusers' FlowMatchEulerDiscreteScheduler takes the same step in
v-form (x + v·dt), equal in exact arithmetic but not bitwise; both keep the gradient. Only euler/simple is
offered: the node side's other samplers are ComfyUI's own code, which this package does not import.
"""

from __future__ import annotations

import torch

SAMPLERS, SCHEDULERS = ("euler",), ("simple",)
TIMESTEPS, MULTIPLIER = 1000, 1000.0


def time_snr_shift(shift: float, t):
    return t if shift == 1.0 else shift * t / (1 + (shift - 1) * t)


def sigma_table(shift: float) -> torch.Tensor:
    """ModelSamplingDiscreteFlow.sigmas: the 1000 noise levels of a flow model with ``shift`` (float32)."""
    ts = (torch.arange(1, TIMESTEPS + 1, 1) / TIMESTEPS) * MULTIPLIER
    return time_snr_shift(shift, ts / MULTIPLIER)


def simple_schedule(table: torch.Tensor, steps: int) -> torch.Tensor:
    """comfy.samplers.simple_scheduler over a model's noise levels ``table``."""
    stride = len(table) / steps
    return torch.FloatTensor([float(table[-(1 + int(x * stride))]) for x in range(steps)] + [0.0])


def timestep_fraction(sigma: float) -> float:
    """A flow model's timestep of ``sigma`` as a fraction of its range (float32 as ComfyUI computes it), for the
    expert boundary (training/adapter/experts.py)."""
    return float(torch.tensor(float(sigma)) * MULTIPLIER) / MULTIPLIER


def _sigma_like(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return sigma.reshape(sigma.shape[:1] + (1,) * (x.ndim - 1)) if sigma.ndim else sigma


def noise_scaling(sigma, noise: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """CONST.noise_scaling: the sampler's start from ``noise`` at ``sigma`` over ``latent``."""
    return sigma * noise + (1.0 - sigma) * latent


def inverse_noise_scaling(sigma, latent: torch.Tensor) -> torch.Tensor:
    return latent / (1.0 - sigma)


def euler(model_fn, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """k-diffusion's sample_euler without churn (ComfyUI's ``euler``), differentiable; returns the last x."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i]
        denoised = model_fn(x, sigma * s_in)
        d = (x - denoised) / sigma
        x = x + d * (sigmas[i + 1] - sigma)
    return x


def flow_x0(velocity, x: torch.Tensor, sigma: torch.Tensor, embedding) -> torch.Tensor:
    """CONST: the model's velocity v at timestep 1000·sigma gives x0 = x - sigma·v (calculate_denoised)."""
    return x - velocity(x, (sigma * MULTIPLIER).float(), embedding) * _sigma_like(sigma, x)


def cfg(x0, cond, uncond, scale: float) -> torch.Tensor:
    """CFG on x0 predictions as ComfyUI's cfg_function (scale 1: the conditional one only, as ComfyUI skips it);
    ``x0(embedding)`` is the model's x0 prediction for one conditioning."""
    cond_x0 = x0(cond)
    if scale == 1.0:
        return cond_x0
    uncond_x0 = x0(uncond)
    return uncond_x0 + (cond_x0 - uncond_x0) * scale
