"""Wan 2.2 A14B in the trainer: the high-noise expert samples the steps before the expert boundary.

ComfyUI's Wan 2.2 template samples with two KSamplerAdvanced: the high-noise expert from step 0 to the
boundary step b with leftover noise, then the low-noise expert from b to the end without adding noise. Two
sampler calls: a multi-step sampler restarts its history at b, and the latent passes between them through
the samplers' own noise (un)scaling and ``process_latent_out`` / ``process_latent_in``. The trainer does the
same: ``high_noise_part`` is the first KSamplerAdvanced (core ``comfy.sample.sample``, no gradient, the
high-noise expert loaded only for it), and the training rollout is the second one on the low-noise expert,
which alone carries the adapter.

The boundary is a fraction of the timestep range, as the official Wan 2.2 code uses it: a step belongs to the
high-noise expert when its timestep t (for Wan: 1000·sigma, after the shift) is >= boundary·1000; official
T2V: 0.875. With shift 8 and 20 euler/simple steps that is step 11 (sigma_10 = 0.889 is still above 0.875);
ComfyUI's template splits at step 10, which a boundary in (0.889, 0.907], e.g. 0.9, reproduces.
"""

from __future__ import annotations

import logging

import torch

import comfy.sample
import comfy.samplers

from ...training.adapter.gate import first_gated_step

log = logging.getLogger(__name__)
DEFAULT_BOUNDARY = 0.875  # Wan 2.2 T2V A14B's official expert boundary (fraction of the timestep range)


def timestep_fraction(model_sampling, sigma: float) -> float:
    """The model's timestep of ``sigma`` as a fraction of its range (Wan: sigma itself)."""
    multiplier = float(getattr(model_sampling, "multiplier", 1000.0))
    return float(model_sampling.timestep(torch.tensor(float(sigma)))) / multiplier


def boundary_step(model_sampling, sigmas: torch.Tensor, boundary: float) -> int:
    """b: how many leading steps of ``sigmas`` belong to the high-noise expert (timestep >= boundary)."""
    b = 0
    for sigma in sigmas[:-1].tolist():
        if timestep_fraction(model_sampling, sigma) < boundary:
            break
        b += 1
    return b


def ksampler_sigmas(patcher, steps: int, sampler: str, scheduler: str) -> torch.Tensor:
    """The schedule KSampler / KSamplerAdvanced computes for ``patcher`` (its own model_sampling)."""
    return comfy.samplers.KSampler(patcher, steps, patcher.load_device, sampler=sampler, scheduler=scheduler,
                                   denoise=1.0).sigmas


class HighNoiseExpert:
    """The high-noise expert of a Wan 2.2 A14B pair and the boundary that hands over to the low-noise one."""

    def __init__(self, patcher, boundary: float = DEFAULT_BOUNDARY):
        if not 0.0 < float(boundary) < 1.0:
            raise ValueError(f"expert_boundary: got {boundary!r}, expected a fraction of the timestep range in "
                             "(0, 1) (Wan 2.2 T2V A14B: 0.875)")
        self.patcher, self.boundary = patcher, float(boundary)

    def split_step(self, low_patcher, steps: int, sampler: str, scheduler: str) -> tuple[int, int]:
        """(b, N) for this sampling: the low-noise expert's schedule (the one the adapter is gated on) of N steps."""
        low = ksampler_sigmas(low_patcher, steps, sampler, scheduler)
        high = ksampler_sigmas(self.patcher, steps, sampler, scheduler)
        if not torch.allclose(low, high):
            log.warning("the two experts have different sigma schedules (different shift?); the trainer splits "
                        "where the low-noise expert's schedule crosses the boundary, as two KSamplerAdvanced "
                        "with the same step count would")
        return boundary_step(low_patcher.get_model_object("model_sampling"), low, self.boundary), len(low) - 1

    def check_gate(self, gate_start: float, b: int, num_steps: int) -> None:
        """Refuse a gate start whose first gated step falls in the high-noise expert's steps."""
        g = first_gated_step(num_steps, gate_start)
        if g < b:
            raise ValueError(
                f"gate_start: got {gate_start:g}, which opens the gate at step {g} of {num_steps}, but steps 0-{b - 1} "
                f"belong to the high-noise expert (expert_boundary {self.boundary:g}); the adapter trains on and "
                f"applies to the low-noise expert only. Expected gate_start >= {b / num_steps:g}: raise gate_start, "
                "or raise expert_boundary")

    def high_noise_part(self, noise: torch.Tensor, latent: torch.Tensor, positive, negative, cfg: float, steps: int,
                        sampler: str, scheduler: str, b: int, seed: int) -> torch.Tensor:
        """The template's first KSamplerAdvanced: steps 0..b with leftover noise (add_noise on, no gradient).

        Returns its LATENT samples (after ``process_latent_out``), which the second sampler call takes in.
        """
        if b == 0:
            return latent
        with torch.no_grad():
            return comfy.sample.sample(self.patcher, noise, steps, cfg, sampler, scheduler, positive, negative,
                                       latent, denoise=1.0, disable_noise=False, start_step=0, last_step=b,
                                       force_full_denoise=False, disable_pbar=True, seed=seed)
