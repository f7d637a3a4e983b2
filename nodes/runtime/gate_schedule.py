"""Where a sampler run sits in the whole sampling: the default ('steps') gate rule on ComfyUI's schedules.

A model call sees only the running sampler call's schedule (``transformer_options["sample_sigmas"]``). When
one sampling is split over several sampler nodes (the Wan 2.2 template: KSamplerAdvanced steps 0-10 of 20 on
the high-noise expert, then 10-20 on the low-noise one; SplitSigmas), that is a slice of the full schedule,
and counting steps inside the slice would put the gate in the wrong place (global step 18 instead of 15). So:

1. a schedule from the model's sigma_max down to 0 is a whole sampling: the gate opens at its step
   ceil(gate_start * N) (``step_gate_sigma``; single-sampler results are bit-identical to before);
2. a schedule from below sigma_max down to 0 *to which the sampler adds fresh noise* is a partial denoise
   (KSampler denoise < 1, vid2vid): it is its own sampling of N steps and the gate counts them, as before;
3. any other schedule (it ends with leftover noise, or continues a latent without adding noise) is a
   window of a larger sampling: it is matched against the schedules ComfyUI's schedulers give for this
   model (``comfy.samplers.calculate_sigmas`` for every scheduler and 1..MAX_STEPS steps, also with the
   penultimate sigma dropped as KSampler does for dpm_2/uni_pc), and the gate opens at global step
   ceil(gate_start * N) of the full schedule it is a contiguous part of (``window_gate_sigma``);
4. when no schedule fits, or fits disagree on the gate, the gate falls back to the timestep fraction
   (``model_sampling.percent_to_sigma``, which equals step counting for flow models with 'simple').

Each distinct schedule is resolved once (cached per model_sampling) and the rule used is logged once.
"""

from __future__ import annotations

import weakref

import torch

import comfy.samplers

from ...training.adapter.gate import step_gate_sigma, window_gate_sigma
from ...training.logs import pack_logger

log = pack_logger(__name__)

MAX_STEPS = 200  # longest full schedule searched for (sampling steps of the whole run)


def _max_sigma(model_sampling) -> float:
    return float(model_sampling.sigma_max)


class ScheduleLocator:
    """Full candidate schedules per model_sampling and the resolved gate per running schedule, both cached."""

    def __init__(self, max_steps: int = MAX_STEPS):
        self.max_steps = max_steps
        self._schedules: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._resolved: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def schedules(self, model_sampling) -> list[tuple[str, torch.Tensor]]:
        """(label, sigmas) for every scheduler and step count KSampler can produce for this model."""
        if model_sampling not in self._schedules:
            out = []
            for name in comfy.samplers.SCHEDULER_NAMES:
                for n in range(1, self.max_steps + 2):
                    try:
                        sigmas = comfy.samplers.calculate_sigmas(model_sampling, name, n).detach().float().cpu()
                    except Exception as e:  # a scheduler that cannot make n steps for this model
                        log.debug("gate schedules: %s with %d steps failed: %s", name, n, e)
                        continue
                    if n <= self.max_steps:
                        out.append((name, sigmas))
                    if n >= 2:  # KSampler for dpm_2 / uni_pc: n - 1 steps, penultimate sigma dropped
                        out.append((f"{name}, dpm_2/uni_pc", torch.cat([sigmas[:-2], sigmas[-1:]])))
            self._schedules[model_sampling] = out
        return self._schedules[model_sampling]

    def steps_gate_sigma(self, model_sampling, sample_sigmas: torch.Tensor, gate_start: float,
                         noise_added: bool | None) -> float | None:
        """The sigma at or below which a call of this sampler run is gated (None: never), by rules 1-4.

        ``noise_added``: whether the run adds noise at its start (None: not known, e.g. a model call outside
        the gate's sampler wrapper; then a run from below sigma_max down to 0 is taken as a window)."""
        first, last = float(sample_sigmas[0]), float(sample_sigmas[-1])
        starts_at_max = first >= _max_sigma(model_sampling) * (1.0 - 1e-5)
        if last == 0.0 and starts_at_max:
            return step_gate_sigma(sample_sigmas, gate_start)  # rule 1: a whole sampling, as always
        partial = last == 0.0 and bool(noise_added)
        key = (tuple(sample_sigmas.detach().float().cpu().tolist()), float(gate_start), partial)
        cache = self._resolved.setdefault(model_sampling, {})
        if key not in cache:
            if partial:  # rule 2: its own sampling of N steps
                cache[key] = step_gate_sigma(sample_sigmas, gate_start)
                log.info("PersonalVideo gate: this sampler run adds fresh noise at sigma %.4g < sigma_max (a partial "
                         "denoise, denoise < 1): gate_start %g counts its own %d steps", first, gate_start,
                         int(sample_sigmas.shape[0]) - 1)
            else:
                cache[key] = self._resolve(model_sampling, sample_sigmas.detach().float().cpu(), gate_start)
        return cache[key]

    def _resolve(self, model_sampling, window: torch.Tensor, gate_start: float) -> float | None:
        status, gate_sigma, matches = window_gate_sigma(window, self.schedules(model_sampling), gate_start)
        steps = int(window.shape[0]) - 1
        span = f"{steps} steps, sigma {float(window[0]):.4g} to {float(window[-1]):.4g}"
        if status == "matched":
            where = "never opens in this run" if gate_sigma is None else f"opens at sigma {gate_sigma:.4g}"
            log.info("PersonalVideo gate: this sampler run (%s) is %s of a split sampling; gate_start %g counts "
                     "the steps of the whole sampling, so the gate %s", span, " or ".join(matches[:3]),
                     gate_start, where)
            return gate_sigma
        fallback = float(model_sampling.percent_to_sigma(gate_start))
        why = ("fits no schedule ComfyUI's schedulers make with up to "
               f"{self.max_steps} steps" if status == "unmatched" else
               f"fits several schedules that put the gate in different places ({', '.join(matches[:4])})")
        log.warning("PersonalVideo gate: this sampler run (%s) is part of a larger sampling but %s; gating by "
                    "timestep fraction instead (as gate_mode 'timestep'): the adapter acts below sigma %.4g. "
                    "Set gate_mode 'timestep' to choose this rule explicitly.", span, why, fallback)
        return fallback


LOCATOR = ScheduleLocator()
