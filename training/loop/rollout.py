"""The generation part of one training step: the source run (frozen model) and the tuned run (model + adapter).

Both runs use the caller's sampler (``sample``: the user's sampler over the whole schedule, e.g. ComfyUI's
euler, dpmpp_2m or uni_pc, exactly as KSampler runs it) and differ only in the model function it calls:

- the **source** run (no gradient) calls the frozen model at every noise level and records the calls
  before the gate;
- the **tuned** run replays those recorded outputs for the calls before the gate (the adapter does not
  act there, so the inputs are the same, which is checked) and calls the model with the adapter for the
  gated calls, with gradient. The pre-gate trajectory is therefore computed once and is shared, and the
  sampler's own arithmetic between model calls is differentiated like any torch code.

Each gradient-carrying model call is checkpointed (recomputed in backward), so memory does not grow
with the number of gated steps; optionally only the last K gated calls carry gradient (the earlier gated
calls still use the adapter, detached). The gate is decided by training/adapter/gate.py's rule, the one the apply
node uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint

from ..adapter.gate import gate_is_open

# denoise(x, sigma, adapter_on, **sampler_kwargs) -> the CFG-combined x0 prediction at noise level sigma
Denoise = Callable[..., torch.Tensor]
# model_fn(x, sigma, **sampler_kwargs) -> x0 prediction: what a sampler calls
ModelFn = Callable[..., torch.Tensor]
# sample(model_fn, x) -> final latent: one run of a sampler over the whole schedule, starting from x
Sample = Callable[[ModelFn, torch.Tensor], torch.Tensor]
CUT = "the sampler cut the gradient (it runs under no_grad or detaches its latent): train with another sampler"


@dataclass
class Rollout:
    gate_latent: torch.Tensor  # input of the first gated model call (shared by both runs, no gradient)
    source: torch.Tensor  # final latent of the source run: frozen model, no adapter (no gradient)
    tuned: torch.Tensor  # final latent of the tuned run: model + adapter (gradient into the adapter)
    gated_calls: int  # model calls the adapter acted in


def gated_rollout(sample: Sample, denoise: Denoise, x: torch.Tensor, gate_sigma: float | None,
                  backprop_last_k: int = 0, checkpoint_calls: bool = True) -> Rollout:
    """Source and tuned runs of ``sample`` from ``x``; the adapter acts in calls at sigma <= ``gate_sigma``.

    ``backprop_last_k`` = 0 keeps gradient through every gated call, K > 0 through the last K only.
    """
    recorded: list[tuple[torch.Tensor, torch.Tensor]] = []  # (input, output) of the pre-gate calls
    gate_inputs: list[torch.Tensor] = []

    # Copies: a sampler may update its latent or the model output in place after the call.
    def source_model(latent, sigma, **kwargs):
        out = denoise(latent, sigma, False, **kwargs)
        if gate_is_open(sigma, gate_sigma):
            gate_inputs.append(latent.clone())
        else:
            recorded.append((latent.clone(), out.clone()))
        return out

    with torch.no_grad():
        source = sample(source_model, x)
    gated_calls = len(gate_inputs)
    if gated_calls == 0:
        raise ValueError("the gate never opens with these settings: lower gate_start or raise sampling_steps")
    first_grad = 0 if backprop_last_k <= 0 else max(0, gated_calls - backprop_last_k)
    replay = iter(recorded)
    count, carried_gradient = 0, False
    grad_wanted = torch.is_grad_enabled()  # under no_grad the tuned run is a forward only

    def tuned_model(latent, sigma, **kwargs):
        nonlocal count, carried_gradient
        if not gate_is_open(sigma, gate_sigma):
            seen, out = next(replay, (None, None))
            if seen is None or not torch.equal(seen, latent):
                raise RuntimeError("the sampler reached a pre-gate model call with another input in the tuned "
                                   "run than in the source run: it is not deterministic, so it cannot train")
            return out.clone()
        k = count
        count += 1
        if k == 0 and not torch.equal(latent, gate_inputs[0]):
            raise RuntimeError("the latent at the gate differs between the source and tuned runs")
        if k < first_grad:
            with torch.no_grad():
                return denoise(latent, sigma, True, **kwargs)
        if grad_wanted and not torch.is_grad_enabled():
            raise RuntimeError(CUT)
        if checkpoint_calls:
            out = checkpoint(denoise, latent, sigma, True, use_reentrant=False, **kwargs)
        else:
            out = denoise(latent, sigma, True, **kwargs)
        carried_gradient |= out.requires_grad
        return out

    tuned = sample(tuned_model, x)
    if count != gated_calls:
        raise RuntimeError(f"the tuned run made {count} gated model calls, the source run {gated_calls}")
    if carried_gradient and not tuned.requires_grad:
        raise RuntimeError(CUT)
    return Rollout(gate_inputs[0].detach(), source, tuned, gated_calls)
