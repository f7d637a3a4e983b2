"""Wan 2.2 A14B in the trainer: the high-noise expert samples the steps before the expert boundary.

ComfyUI's Wan 2.2 template samples with two KSamplerAdvanced: the high-noise expert from step 0 to the
boundary step b with leftover noise, then the low-noise expert from b to the end without adding noise. Two
sampler calls: a multi-step sampler restarts its history at b, and the latent passes between them through
the samplers' own noise (un)scaling and ``process_latent_out`` / ``process_latent_in``. The trainer does the
same: ``high_noise_part`` is the first KSamplerAdvanced (core ``comfy.sample.sample``, no gradient, the
high-noise expert loaded only for it), and the training rollout is the second one on the low-noise expert,
which alone carries the adapter. Where the boundary falls and where the gate may open are
training/adapter/experts.py's rules, on ComfyUI's model sampling here. The split is either the boundary (a
timestep fraction, whose step depends on the shift and the step count) or ``switch_step``, the graph's own number
(the first KSamplerAdvanced's end_at_step), which equals the graph's split at any shift and step count.
"""

from __future__ import annotations

import torch

import comfy.sample
import comfy.samplers

from ...training.adapter.experts import (DEFAULT_BOUNDARY, boundary_step, check_boundary,
                                         check_gate_after_boundary, describe_split)
from ...training.logs import pack_logger

log = pack_logger(__name__)


def timestep_fraction(model_sampling, sigma: float) -> float:
    """The model's timestep of ``sigma`` as a fraction of its range (Wan: sigma itself)."""
    multiplier = float(getattr(model_sampling, "multiplier", 1000.0))
    return float(model_sampling.timestep(torch.tensor(float(sigma)))) / multiplier


def high_noise_steps(model_sampling, sigmas: torch.Tensor, boundary: float) -> int:
    """b: how many leading steps of ``sigmas`` belong to the high-noise expert (timestep fraction >= boundary)."""
    return boundary_step([timestep_fraction(model_sampling, sigma) for sigma in sigmas[:-1].tolist()], boundary)


def ksampler_sigmas(patcher, steps: int, sampler: str, scheduler: str) -> torch.Tensor:
    """The schedule KSampler / KSamplerAdvanced computes for ``patcher`` (its own model_sampling)."""
    return comfy.samplers.KSampler(patcher, steps, patcher.load_device, sampler=sampler, scheduler=scheduler,
                                   denoise=1.0).sigmas


class HighNoiseExpert:
    """The high-noise expert of a Wan 2.2 A14B pair and the boundary that hands over to the low-noise one."""

    def __init__(self, patcher, boundary: float | None = DEFAULT_BOUNDARY, switch_step: int = 0):
        """``switch_step`` > 0 splits there and ``boundary`` is not used (None allowed); 0 splits at ``boundary``."""
        if int(switch_step) < 0:
            raise ValueError(f"expert_switch_step: got {switch_step!r}, expected 0 (use expert_boundary) or the step "
                             "at which the low-noise expert takes over (the first KSamplerAdvanced's end_at_step)")
        self.patcher, self.switch_step = patcher, int(switch_step)
        self.boundary = None if self.switch_step else check_boundary(boundary)

    def describe_split(self) -> str:
        """Where the split comes from, for the summary."""
        return describe_split(self.boundary, self.switch_step)

    def split_step(self, low_patcher, steps: int, sampler: str, scheduler: str) -> tuple[int, int]:
        """(b, N) for this sampling: the low-noise expert's schedule (the one the adapter is gated on) of N steps.
        b is ``switch_step`` when one is set (the graph's own number), else where the schedule crosses the
        boundary."""
        low = ksampler_sigmas(low_patcher, steps, sampler, scheduler)
        if self.switch_step:
            if not self.switch_step < len(low) - 1:
                raise ValueError(
                    f"expert_switch_step: got {self.switch_step}, but sampling_steps is {len(low) - 1}, so the "
                    f"low-noise expert (the one trained) would run no step. Expected 1-{len(low) - 2}: the first "
                    "KSamplerAdvanced's end_at_step of a graph with the same steps (ComfyUI's template: 10 of 20; "
                    "with the 4-step LoRAs 2 of 4), or 0 to use expert_boundary")
            return self.switch_step, len(low) - 1
        high = ksampler_sigmas(self.patcher, steps, sampler, scheduler)
        if not torch.allclose(low, high):
            log.warning("the two experts have different sigma schedules (different shift?); the trainer splits "
                        "where the low-noise expert's schedule crosses the boundary, as two KSamplerAdvanced "
                        "with the same step count would")
        return high_noise_steps(low_patcher.get_model_object("model_sampling"), low, self.boundary), len(low) - 1

    def check_gate(self, gate_start: float, b: int, num_steps: int) -> None:
        """Refuse a gate start whose first gated step falls in the high-noise expert's steps."""
        check_gate_after_boundary(gate_start, b, num_steps, self.boundary, self.switch_step)

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
