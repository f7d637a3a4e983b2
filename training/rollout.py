"""The generation part of one training step: a shared pre-gate trajectory, then two gated branches.

Because the adapter does nothing before the gate, the latent at the gate step does not depend on it:
the steps before the gate run once, without gradient and without the adapter. From that latent the
frozen source branch (adapter off, no gradient) and the adapter branch (adapter on, with gradient) run
the gated steps. Each gradient-carrying step is checkpointed (recomputed in backward), so memory does not
grow with the number of gated steps; optionally only the last K steps carry gradient (the earlier gated
steps still use the adapter, detached).

Sampling is Euler on the model's own sigma schedule, in k-diffusion form (``denoised`` is the model's
x0 prediction at ``sigma``), which is what ComfyUI's euler sampler does for every model family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint

# denoise(x, sigma, adapter_on) -> the CFG-combined x0 prediction at noise level sigma
Denoise = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]


def euler_step(x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor):
    """One Euler step of the probability-flow ODE (ComfyUI's ``sample_euler`` without churn)."""
    return x + (x - denoised) / sigma * (sigma_next - sigma)


@dataclass
class Rollout:
    gate_latent: torch.Tensor  # latent entering step ``gate_step`` (shared, no gradient)
    source: torch.Tensor  # final latent without the adapter (no gradient)
    adapter: torch.Tensor  # final latent with the adapter (gradient into the adapter)


def gated_rollout(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, gate_step: int,
                  backprop_last_k: int = 0, checkpoint_steps: bool = True) -> Rollout:
    """Run ``len(sigmas) - 1`` Euler steps from ``x`` with the adapter acting from ``gate_step`` on.

    ``backprop_last_k`` = 0 keeps gradient through every gated step, K > 0 through the last K only.
    """
    n = int(sigmas.shape[0]) - 1
    if not 0 <= gate_step <= n:
        raise ValueError(f"gate_step: got {gate_step}, expected 0..{n}")

    def step(latent, i: int, adapter_on: bool):
        return euler_step(latent, denoise(latent, sigmas[i], adapter_on), sigmas[i], sigmas[i + 1])

    with torch.no_grad():
        for i in range(gate_step):
            x = step(x, i, False)
        gate_latent = x.detach()
        source = gate_latent
        for i in range(gate_step, n):
            source = step(source, i, False)

    first_grad = gate_step if backprop_last_k <= 0 else max(gate_step, n - backprop_last_k)
    adapter = gate_latent
    for i in range(gate_step, n):
        if i < first_grad:
            with torch.no_grad():
                adapter = step(adapter, i, True)
        elif checkpoint_steps:
            adapter = checkpoint(step, adapter, i, True, use_reentrant=False)
        else:
            adapter = step(adapter, i, True)
    return Rollout(gate_latent, source, adapter)
