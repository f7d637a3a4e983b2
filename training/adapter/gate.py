"""When the isolated identity adapter acts during sampling.

The adapter is active only in the final part of the denoising trajectory, from the *gate start*
``gate_start`` (a fraction; the method's default 0.75 = the last quarter). Everything is decided from
what a model call can see: the current sigma and the running sampler call's sigma schedule.

- ``"steps"`` (default, the method's definition): with N steps in the sampling, the adapter acts from
  step g = ceil(gate_start * N) on, i.e. for every model evaluation at a noise level sigma <= sigma_g
  (plus a small relative tolerance). For one-evaluation-per-step samplers (euler, dpmpp_2m, ddim, uni_pc,
  lcm, ...) that is exactly the steps i >= g. Samplers that also evaluate at the end of a step (heun,
  dpm_2) see the adapter in the corrector evaluation of step g - 1, which sits at sigma_g: the gate is a
  noise level, not a call counter. When one sampling is split over several sampler nodes, each sees only
  its slice (a *window*) of the full schedule; ``window_gate_sigma`` places the window in the full
  schedule so that g counts the steps of the whole sampling (the caller supplies the candidate full
  schedules; nodes/runtime/gate_schedule.py decides when a schedule is a window).
- ``"timestep"``: ``gate_start`` is a fraction of the model's timestep range, as core hooks and the
  start/end percent inputs of core nodes use it; the caller converts it to the gate sigma
  (``model_sampling.percent_to_sigma``).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

GATE_MODES = ("steps", "timestep")
DEFAULT_GATE_START = 0.75  # the method's last quarter; also the value for a LoRA whose file records none
# Relative tolerance when comparing a model call's sigma with the schedule: sigmas travel through
# float32/float16 conversions between the sampler and the model call.
SIGMA_RTOL = 1e-4
# Relative tolerance when matching a running sampler's schedule against recomputed full schedules (both
# come from the same float32 scheduler code, so they agree far closer than this).
MATCH_RTOL = 1e-5


def check_gate_start(gate_start: float, source: str = "gate_start") -> float:
    """``gate_start`` as a float in [0, 1]; ValueError naming ``source`` otherwise."""
    try:
        value = float(gate_start)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise ValueError(f"{source}: got {gate_start!r}, expected a fraction in [0, 1] (0.75 = the last quarter "
                         "of the steps, 0 = always on, 1 = never)")
    return value


def first_gated_step(num_steps: int, gate_start: float) -> int:
    """Index g of the first step the adapter acts in, for ``num_steps`` steps and gate start ``gate_start``.

    g = ceil(gate_start * num_steps); gate_start 0 gives 0 (always on), 1 gives num_steps (never on).
    """
    check_gate_start(gate_start)
    if num_steps < 0:
        raise ValueError(f"num_steps: got {num_steps}, expected >= 0")
    # Round before ceil so 0.75 * 20 = 15.000000000000002 does not become 16.
    return int(math.ceil(round(gate_start * num_steps, 9)))


def step_gate_sigma(sample_sigmas: torch.Tensor, gate_start: float) -> float | None:
    """The sigma at which the gated part of this (whole) schedule begins, or None if it never begins."""
    num_steps = int(sample_sigmas.shape[0]) - 1
    g = first_gated_step(num_steps, gate_start)
    if g >= num_steps:
        return None
    return float(sample_sigmas[g])


def window_offsets(window: torch.Tensor, full: torch.Tensor, rtol: float = MATCH_RTOL) -> list[int]:
    """Offsets o at which ``window`` equals the contiguous part ``full[o : o + len(window)]``."""
    w, f = window.detach().double().cpu(), full.detach().double().cpu()
    n = int(w.shape[0])
    if n == 0 or n > int(f.shape[0]):
        return []
    tol = rtol * w.abs() + 1e-9
    starts = torch.nonzero((f[: f.shape[0] - n + 1] - w[0]).abs() <= tol[0]).flatten().tolist()
    return [o for o in starts if bool(torch.all((f[o:o + n] - w).abs() <= tol))]


def window_gate_sigma(window: torch.Tensor, schedules: Iterable[tuple[str, torch.Tensor]],
                      gate_start: float) -> tuple[str, float | None, list[str]]:
    """The gate for a sampler run whose schedule ``window`` is a slice of one of the full ``schedules``.

    ``schedules`` yields (label, full sigma schedule). For every place the window fits (the full schedule
    of N steps, the window starting at its step o), the gate opens at global step g = ceil(gate_start * N),
    that is at the window's step k = max(0, g - o), or never in this window when k >= len(window) (k may
    be the window's last sigma, where a corrector evaluation of the step before can sit). Returns
    (status, gate sigma, matches):

    - ``"matched"``: every fit gives the same k; the gate sigma is window[k] (None: never in this window);
    - ``"ambiguous"``: fits disagree on k; no gate sigma (None) (the caller falls back to another rule);
    - ``"unmatched"``: the window fits no schedule; no gate sigma (None).

    ``matches`` describes the fits ("steps 10-20 of 20 (simple)").
    """
    ks: set[int | None] = set()
    matches = []
    length = int(window.shape[0])
    for label, full in schedules:
        num_steps = int(full.shape[0]) - 1
        g = first_gated_step(num_steps, gate_start)
        for o in window_offsets(window, full):
            k = max(0, g - o)
            ks.add(k if k < length else None)
            matches.append(f"steps {o}-{o + length - 1} of {num_steps} ({label})")
    if not matches:
        return "unmatched", None, matches
    if len(ks) > 1:
        return "ambiguous", None, matches
    k = ks.pop()
    gate_sigma = None if k is None else float(window[k])
    return "matched", (gate_sigma if gate_sigma else None), matches  # a gate at sigma 0 never opens


def gate_is_open(sigma: torch.Tensor | float, gate_sigma: float | None) -> bool:
    """True when a model call at noise level ``sigma`` is in the gated part (sigma <= gate sigma).

    ``sigma`` may be a per-sample tensor; a sampler evaluates one noise level per call, so its largest
    entry decides.
    """
    if gate_sigma is None:
        return False
    s = float(sigma.max()) if isinstance(sigma, torch.Tensor) else float(sigma)
    return s <= gate_sigma * (1.0 + SIGMA_RTOL) + 1e-12
