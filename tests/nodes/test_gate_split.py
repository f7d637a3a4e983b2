"""The default gate in split-sampler graphs: ComfyUI's Wan 2.2 A14B template, in real ComfyUI.

The two experts are tiny random Wan 2.1-architecture models (ComfyUI loads the real A14B experts as WAN21
too) written with two seeds; text conditioning comes from the dev stand-in node (no tiny UMT5 exists).
The template: ModelSamplingSD3 shift 8 on both experts, KSamplerAdvanced high-noise steps 0-10 of 20 with
leftover noise, then low-noise steps 10-20 without adding noise, euler/simple; the apply node on the
low-noise expert with default inputs. The reference runs the identity LoRA from global step 15 of 20 with
core nodes only: a third KSamplerAdvanced on LoraLoaderModelOnly.
"""

from __future__ import annotations

import logging

import pytest
import torch

from graphs import base_graph, expert_file, gated, install_experts, lora, rel_err, run_latent

STEPS, SPLIT, SHIFT, CFG = 20, 10, 8.0, 3.5
IDENT = "identity_wan21.safetensors"


@pytest.fixture(scope="module", autouse=True)
def models(comfy):
    install_experts(comfy)


def load_expert(g, expert):
    model = g.add("UNETLoader", unet_name=expert_file(expert), weight_dtype="default")
    return g.add("ModelSamplingSD3", model=model, shift=SHIFT)


def advanced(g, model, pos, neg, latent, start, end, add_noise, leftover, scheduler):
    return g.add("KSamplerAdvanced", model=model, positive=pos, negative=neg, latent_image=latent,
                 add_noise="enable" if add_noise else "disable", noise_seed=7, steps=STEPS, cfg=CFG,
                 sampler_name="euler", scheduler=scheduler, start_at_step=start, end_at_step=end,
                 return_with_leftover_noise="enable" if leftover else "disable")


def template(comfy, low=lambda g, m: m, high=lambda g, m: m, scheduler="simple"):
    """The Wan 2.2 A14B template; ``low`` / ``high`` add nodes to each expert's model."""
    g, _, pos, neg, latent = base_graph("wan21")
    first = advanced(g, high(g, load_expert(g, "high_noise")), pos, neg, latent, 0, SPLIT, True, True, scheduler)
    second = advanced(g, low(g, load_expert(g, "low_noise")), pos, neg, first, SPLIT, 10000, False, False,
                      scheduler)
    return run_latent(comfy, g, second)


def reference(comfy, gate_step, scheduler="simple"):
    """Core nodes only: the identity LoRA (always-on loader) on the low-noise expert from ``gate_step`` on."""
    g, _, pos, neg, latent = base_graph("wan21")
    high, low = load_expert(g, "high_noise"), load_expert(g, "low_noise")
    first = advanced(g, high, pos, neg, latent, 0, SPLIT, True, True, scheduler)
    second = advanced(g, low, pos, neg, first, SPLIT, gate_step, False, True, scheduler)
    third = advanced(g, lora(g, low, IDENT), pos, neg, second, gate_step, 10000, False, False, scheduler)
    return run_latent(comfy, g, third)


def flow_sampling():
    """The model sampling ModelSamplingSD3 (shift 8) gives a Wan model, as that node builds it."""
    import comfy.model_sampling as model_sampling

    class FlowShift(model_sampling.ModelSamplingDiscreteFlow, model_sampling.CONST):
        pass

    ms = FlowShift(None)
    ms.set_parameters(shift=SHIFT, multiplier=1000)
    return ms


def first_step_below(sigmas: torch.Tensor, gate_sigma: float) -> int:
    return int((sigmas[:-1] > gate_sigma * (1 + 1e-4)).sum())


@pytest.mark.parametrize("scheduler", ["simple", "beta"])
def test_wan22_template_with_default_inputs_gates_from_global_step_15(comfy, scheduler):
    out = template(comfy, low=lambda g, m: gated(g, m, IDENT), scheduler=scheduler)
    at_15, at_18 = reference(comfy, 15, scheduler), reference(comfy, 18, scheduler)
    base = template(comfy, scheduler=scheduler)
    assert torch.isfinite(out).all()
    assert rel_err(out, at_15) <= 1e-5
    # What counting steps inside the low-noise sampler's slice would give (10 + ceil(0.75 x 10) = 18): the
    # references differ, so the check above tells the two rules apart.
    assert rel_err(at_18, at_15) > 1e-4
    assert rel_err(out, base) > 1e-3, "the adapter must change the result after the gate"
    if scheduler == "beta":
        # Here the timestep fraction (the fallback rule) would open the gate at another step: the result above
        # comes from placing the slice in the 20-step beta schedule.
        import comfy.samplers as samplers

        ms = flow_sampling()
        full = samplers.calculate_sigmas(ms, "beta", STEPS)
        assert first_step_below(full, ms.percent_to_sigma(0.75)) != 15


def test_adapter_on_both_experts_still_opens_at_global_step_15(comfy):
    """The high-noise run (steps 0-10, leftover noise) is a slice too: the gate must not open at its step 8."""
    out = template(comfy, low=lambda g, m: gated(g, m, IDENT), high=lambda g, m: gated(g, m, IDENT))
    assert rel_err(out, reference(comfy, 15)) <= 1e-5


def test_split_sigmas_with_sampler_custom_advanced(comfy):
    g, _, pos, neg, latent = base_graph("wan21")
    high, low = load_expert(g, "high_noise"), load_expert(g, "low_noise")
    sigmas = g.add("BasicScheduler", model=low, scheduler="simple", steps=STEPS, denoise=1.0)
    split = g.add("SplitSigmas", sigmas=sigmas, step=SPLIT)
    euler = g.add("KSamplerSelect", sampler_name="euler")

    def run(model, noise, part, image):
        guider = g.add("CFGGuider", model=model, positive=pos, negative=neg, cfg=CFG)
        return g.add("SamplerCustomAdvanced", noise=noise, guider=guider, sampler=euler, sigmas=[split[0], part],
                     latent_image=image)

    first = run(high, g.add("RandomNoise", noise_seed=7), 0, latent)
    second = run(gated(g, low, IDENT), g.add("DisableNoise"), 1, first)
    out = run_latent(comfy, g, second)
    assert rel_err(out, reference(comfy, 15)) <= 1e-5


def test_schedule_that_fits_no_scheduler_falls_back_to_the_timestep_fraction(comfy, caplog):
    """A hand-made Karras schedule (its sigma_min is not the model's) split in two: no ComfyUI scheduler makes
    it, so the default mode gates like gate_mode 'timestep' and says so in the log."""

    def run(mode):
        g, model, pos, neg, latent = base_graph("wan21")
        sigmas = g.add("KarrasScheduler", steps=8, sigma_max=1.0, sigma_min=0.05, rho=5.0)
        split = g.add("SplitSigmas", sigmas=sigmas, step=4)
        euler = g.add("KSamplerSelect", sampler_name="euler")
        m = gated(g, model, IDENT, mode=mode)
        out = latent
        for part, noise in ((0, g.add("RandomNoise", noise_seed=7)), (1, g.add("DisableNoise"))):
            guider = g.add("CFGGuider", model=m, positive=pos, negative=neg, cfg=CFG)
            out = g.add("SamplerCustomAdvanced", noise=noise, guider=guider, sampler=euler,
                        sigmas=[split[0], part], latent_image=out)
        return run_latent(comfy, g, out)

    with caplog.at_level(logging.WARNING):
        default = run("steps")
    by_timestep = run("timestep")
    assert torch.equal(default, by_timestep)
    assert any("fits no schedule" in r.getMessage() and "timestep fraction" in r.getMessage()
               for r in caplog.records)


def test_rule_is_logged_once_per_schedule(comfy, caplog):
    import comfy.samplers as samplers
    from graphs import pack_module

    ms = flow_sampling()
    locator = pack_module("nodes.runtime.gate_schedule").ScheduleLocator(max_steps=30)
    full = samplers.calculate_sigmas(ms, "simple", STEPS)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            low = locator.steps_gate_sigma(ms, full[SPLIT:], 0.75, noise_added=False)
            high = locator.steps_gate_sigma(ms, full[: SPLIT + 1], 0.75, noise_added=True)
    assert low == float(full[15]) and high is None
    notes = [r.getMessage() for r in caplog.records if "split sampling" in r.getMessage()]
    assert len(notes) == 2 and "steps 10-20 of 20 (simple)" in notes[0], notes
    # A whole schedule counts its own steps, as before; so does a partial denoise (fresh noise from below
    # sigma_max down to 0); without added noise the same slice is a window of the 20-step sampling.
    assert locator.steps_gate_sigma(ms, full, 0.75, noise_added=True) == float(full[15])
    assert locator.steps_gate_sigma(ms, full[SPLIT:], 0.75, noise_added=True) == float(full[SPLIT:][8])
