"""The ablation's schedule: where a two-expert model hands over (the trainer node's own rule,
nodes/runtime/expert_split.high_noise_steps, on the sigmas KSampler uses) and each arm's gate start."""

from __future__ import annotations

from benchmarks.proving_ground.ablation_setup import ARMS, Setup


def flow_sigmas(shift: float, steps: int, scheduler: str):
    """KSampler's sigmas for a flow model sampled through ModelSamplingSD3(shift) (ComfyUI's own functions)."""
    import comfy.model_sampling
    import comfy.samplers

    class FlowSampling(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
        pass

    sampling = FlowSampling(None)
    sampling.set_parameters(shift=shift, multiplier=1000)
    return sampling, comfy.samplers.calculate_sigmas(sampling, scheduler, steps)


def expert_split(setup: Setup, steps: int) -> int:
    """How many leading steps the high-noise expert samples (the trainer's boundary rule on the sampler's
    sigmas); 0 without a high-noise expert."""
    if setup.high_noise_model is None:
        return 0
    from personalvideo.nodes.runtime.expert_split import high_noise_steps

    sampling, sigmas = flow_sigmas(setup.shift, steps, setup.scheduler)
    return high_noise_steps(sampling, sigmas, setup.expert_boundary)


def gate_start(setup: Setup, arm: str) -> float:
    """The arm's gate start; "all steps" on a two-expert model: the low-noise expert's first step (in sampling and
    in training, whichever starts later)."""
    start = ARMS[arm][0]
    if start == 0.0 and setup.high_noise_model is not None:
        fractions = [expert_split(setup, n) / n for n in (setup.steps, setup.train_value("sampling_steps"))]
        start = max(fractions)
    return start
