"""When the isolated identity adapter acts during sampling.

The adapter is active only in the final part of the denoising trajectory. Two ways to say where that
part starts are supported, both decided from what a model call can see (the current sigma and the
running sampler call's sigma schedule):

- ``"steps"`` (default, the method's definition): with N = len(sample_sigmas) - 1 steps in the running
  sampler call, the adapter acts from step g = ceil(start * N) on, i.e. for every model evaluation at a
  noise level sigma <= sample_sigmas[g] (plus a small relative tolerance). For one-evaluation-per-step
  samplers (euler, dpmpp_2m, ddim, uni_pc, lcm, ...) that is exactly the steps i >= g. Samplers that also
  evaluate at the end of a step (heun, dpm_2) see the adapter in the corrector evaluation of step g - 1,
  which sits at sigma_g: the gate is a noise level, not a call counter.
- ``"timestep"``: ``start`` is a fraction of the model's timestep range, as core hooks and the
  start/end percent inputs of core nodes use it; the caller converts it to a sigma threshold
  (``model_sampling.percent_to_sigma``). Use it when one sampling is split over two sampler nodes, since
  each sampler node only sees its own slice of the schedule and "steps" counts within that slice.
"""

from __future__ import annotations

import math

import torch

GATE_MODES = ("steps", "timestep")
# Relative tolerance when comparing a model call's sigma with the schedule: sigmas travel through
# float32/float16 conversions between the sampler and the model call.
SIGMA_RTOL = 1e-4


def first_gated_step(num_steps: int, start: float) -> int:
    """Index g of the first step the adapter acts in, for ``num_steps`` steps and start fraction ``start``.

    g = ceil(start * num_steps); start 0 gives 0 (always on), start 1 gives num_steps (never on).
    """
    if not 0.0 <= start <= 1.0:
        raise ValueError(f"start_percent: got {start}, expected a fraction in [0, 1]")
    if num_steps < 0:
        raise ValueError(f"num_steps: got {num_steps}, expected >= 0")
    # Round before ceil so 0.75 * 20 = 15.000000000000002 does not become 16.
    return int(math.ceil(round(start * num_steps, 9)))


def step_gate_sigma(sample_sigmas: torch.Tensor, start: float) -> float | None:
    """The sigma at which the gated part of this sampler call begins, or None if it never begins."""
    num_steps = int(sample_sigmas.shape[0]) - 1
    g = first_gated_step(num_steps, start)
    if g >= num_steps:
        return None
    return float(sample_sigmas[g])


def gate_is_open(sigma: torch.Tensor | float, threshold: float | None) -> bool:
    """True when a model call at noise level ``sigma`` is in the gated part (sigma <= threshold).

    ``sigma`` may be a per-sample tensor; a sampler evaluates one noise level per call, so its largest
    entry decides.
    """
    if threshold is None:
        return False
    s = float(sigma.max()) if isinstance(sigma, torch.Tensor) else float(sigma)
    return s <= threshold * (1.0 + SIGMA_RTOL) + 1e-12
