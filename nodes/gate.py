"""The isolated identity adapter inside ComfyUI: a LoRA that acts only late in sampling.

How it is built from ComfyUI's own machinery, so it lives with the model patcher (clones, offloading,
lowvram, other LoRAs):

- Each adapted weight gets a *weight wrapper* (``ModelPatcher.add_weight_wrapper``). comfy.ops layers
  call their weight wrappers on every forward, on the weight as cast for that forward, so the base
  weights in memory are never modified and no backup is kept. The wrapper adds the LoRA with ComfyUI's
  own ``comfy.lora.calculate_weight`` (the code LoraLoader uses), or returns the weight unchanged.
- One ``IdentityGate`` per apply decides which. An ``APPLY_MODEL`` wrapper (core patcher extension)
  opens or closes it for each model call from the running sampler's schedule
  (``transformer_options["sample_sigmas"]``) and the call's sigma; see training/gate.py for the rule.

Everything is attached to a clone, so the input MODEL and every other clone stay untouched. LoRAs
patched by core loaders (before or after this node) stay always on; their patches are applied to the
weight before it reaches the wrapper, and the identity delta is added on top.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

import torch

import comfy.lora
import comfy.patcher_extension

from ..training.gate import GATE_MODES, gate_is_open, step_gate_sigma

log = logging.getLogger(__name__)


class IdentityGate:
    """Shared on/off switch of one applied adapter, set per model call by ``apply_model_wrapper``."""

    def __init__(self, start_percent: float, mode: str = "steps"):
        if mode not in GATE_MODES:
            raise ValueError(f"gate_mode: got {mode!r}, expected one of {GATE_MODES}")
        if not 0.0 <= start_percent <= 1.0:
            raise ValueError(f"start_percent: got {start_percent}, expected a value in [0, 1]")
        self.start_percent = float(start_percent)
        self.mode = mode
        self.open = False
        self._warned = False

    def threshold(self, base_model, transformer_options: dict) -> float | None:
        """The sigma at or below which this call is gated, or None (never gated)."""
        if self.start_percent >= 1.0:
            return None
        sample_sigmas = transformer_options.get("sample_sigmas")
        if self.mode == "steps" and sample_sigmas is not None:
            return step_gate_sigma(sample_sigmas, self.start_percent)
        if self.mode == "steps" and not self._warned:
            self._warned = True
            log.warning("PersonalVideo gate: this sampler does not report its sigma schedule "
                        "(sample_sigmas); gating by timestep fraction instead of steps")
        return float(base_model.model_sampling.percent_to_sigma(self.start_percent))

    def apply_model_wrapper(self, executor, x, t, *args, **kwargs):
        transformer_options = kwargs.get("transformer_options")
        if transformer_options is None:
            transformer_options = args[3] if len(args) > 3 else {}
        previous = self.open
        self.open = gate_is_open(t, self.threshold(executor.class_obj, transformer_options))
        try:
            return executor(x, t, *args, **kwargs)
        finally:
            self.open = previous


class GatedLoRAWeight:
    """Weight wrapper: ``W`` while the gate is closed, ``W + strength · ΔW`` (ComfyUI's LoRA maths) when open."""

    def __init__(self, gate: IdentityGate, key: str, adapter, strength: float):
        self.gate = gate
        self.key = key
        self.strength = strength
        self._adapters = {None: adapter}  # per device, so the LoRA tensors cross to the GPU once

    def _adapter_on(self, device: torch.device):
        if device not in self._adapters:
            self._adapters[device] = _move_adapter(self._adapters[None], device)
        return self._adapters[device]

    def move_to(self, device=None) -> int:
        """Called by newer ComfyUI when the module moves; returns the bytes kept on ``device``."""
        if device is None:
            return 0
        adapter = self._adapter_on(torch.device(device))
        return sum(t.numel() * t.element_size() for t in _tensors(adapter))

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.gate.open:
            return weight
        patches = [(self.strength, self._adapter_on(weight.device), 1.0, None, None)]
        # Same arithmetic as LoraLoader's patching: float32 intermediate, then the weight's dtype.
        work = weight.to(torch.float32, copy=True)
        return comfy.lora.calculate_weight(patches, work, self.key).to(weight.dtype)


@dataclass
class AppliedAdapter:
    """What applying an adapter did, for the node's report."""

    matched: int = 0
    unmatched_keys: list[str] = field(default_factory=list)


def lora_to_patches(model_patcher, lora_sd: dict) -> tuple[dict, list[str]]:
    """Map a LoRA state dict onto a model as core LoraLoader does: {weight key: adapter}, unmatched keys."""
    key_map = comfy.lora.model_lora_keys_unet(model_patcher.model, {})
    patches = comfy.lora.load_lora(lora_sd, key_map, log_missing=False)
    used: set[str] = set()
    for adapter in patches.values():
        used.update(getattr(adapter, "loaded_keys", ()) or ())
    model_sd_keys = set(model_patcher.model.state_dict().keys())
    resolved = {}
    for k, adapter in patches.items():
        key = k if isinstance(k, str) else k[0]
        if not isinstance(k, str):
            raise ValueError(f"adapter key {k!r} uses an offset/function patch, which gating does not support")
        if key in model_sd_keys:
            resolved[key] = adapter
    unmatched = sorted(k for k in lora_sd if k not in used)
    return resolved, unmatched


def apply_gated_adapter(model_patcher, lora_sd: dict, strength: float, start_percent: float,
                        mode: str = "steps", source: str = "adapter"):
    """Clone ``model_patcher`` with ``lora_sd`` acting only in the gated part of sampling.

    Returns (new patcher, AppliedAdapter). Raises ValueError naming ``source`` when no key matches.
    """
    gate = IdentityGate(start_percent, mode)
    patches, unmatched = lora_to_patches(model_patcher, lora_sd)
    if not patches:
        family = type(model_patcher.model.model_config).__name__
        sample = ", ".join(sorted(lora_sd)[:3])
        raise ValueError(
            f"identity adapter ({source}): none of its {len(lora_sd)} keys match a weight of this {family} "
            f"model (first keys: {sample}). It was made for another model family or is not a LoRA; "
            "connect the model it was trained on."
        )
    if unmatched:
        log.warning("identity adapter (%s): %d of %d keys match no weight of this model and are not "
                    "applied: %s", source, len(unmatched), len(lora_sd), ", ".join(unmatched[:8]))
    patched = model_patcher.clone()
    if strength != 0.0:
        for key, adapter in patches.items():
            patched.add_weight_wrapper(key, GatedLoRAWeight(gate, key, adapter, strength))
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL,
                                     f"personalvideo_gate_{uuid.uuid4().hex}", gate.apply_model_wrapper)
    return patched, AppliedAdapter(matched=len(patches), unmatched_keys=unmatched)


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif hasattr(obj, "weights"):
        yield from _tensors(obj.weights)


def _move(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(_move(o, device) for o in obj)
    if isinstance(obj, list):
        return [_move(o, device) for o in obj]
    return obj


def _move_adapter(adapter, device):
    if hasattr(adapter, "weights") and hasattr(adapter, "loaded_keys"):
        return type(adapter)(adapter.loaded_keys, _move(adapter.weights, device))
    return _move(adapter, device)  # older ("lora", (...)) tuple format
