"""The isolated identity adapter inside ComfyUI: a LoRA that acts only late in sampling.

How it sits on ComfyUI's own machinery:

- The LoRA file is read as core LoraLoader reads it (``comfy.lora.model_lora_keys_unet`` +
  ``comfy.lora.load_lora``), giving ComfyUI weight adapters keyed by model weight.
- An ``APPLY_MODEL`` wrapper (core patcher extension) is added to a *clone* of the model patcher. For
  each model call it decides from the running sampler's schedule (``transformer_options["sample_sigmas"]``)
  and the call's sigma whether the gate is open (rule: training/adapter/gate.py). Only while a gated call runs
  does each adapted comfy.ops layer carry one more *weight function* (the hook ComfyUI's own LoRA trainer
  and lowvram LoRA patches use), which returns ``W + s·ΔW`` out of place for that forward.

So before the gate the model runs exactly as without the adapter, with no extra work; base weights are
never modified and no backup exists; the input MODEL and every other clone are untouched (the wrapper
lives on the clone); LoRAs patched by core loaders before or after this node stay always on (their
patches reach the weight first) and offloading/lowvram are unaffected. Adding ΔW in weight space costs a
few passes over each adapted weight per gated call: cheaper than a bypass ``x·downᵀ·upᵀ`` once a video
has more than a few thousand tokens, which real ones do (Wan 480p, 81 frames: ~32k).
"""

from __future__ import annotations

import logging
import uuid

import torch

import comfy.lora
import comfy.patcher_extension
import comfy.utils

from ..training.adapter.gate import GATE_MODES, gate_is_open, step_gate_sigma

log = logging.getLogger(__name__)


class IdentityGate:
    """Decides per model call whether the adapter acts, and makes it act for that call only."""

    def __init__(self, start_percent: float, mode: str, deltas: dict[str, "WeightDelta"]):
        if mode not in GATE_MODES:
            raise ValueError(f"gate_mode: got {mode!r}, expected one of {GATE_MODES}")
        if not 0.0 <= start_percent <= 1.0:
            raise ValueError(f"start_percent: got {start_percent}, expected a value in [0, 1]")
        self.start_percent = float(start_percent)
        self.mode = mode
        self.deltas = deltas  # parameter key inside the BaseModel -> weight function
        self.force: bool | None = None  # the trainer's override: adapter branch True, source branch False
        self._warned = False

    def threshold(self, base_model, transformer_options: dict) -> float | None:
        """The sigma at or below which a call is gated, or None (never gated)."""
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
        base_model = executor.class_obj
        is_open = self.force if self.force is not None else gate_is_open(
            t, self.threshold(base_model, transformer_options))
        if not is_open:
            return executor(x, t, *args, **kwargs)
        installed = []
        try:
            for key, delta in self.deltas.items():
                module_path, _, param = key.rpartition(".")
                module = comfy.utils.get_attr(base_model, module_path)
                attr = param + "_function"
                previous = getattr(module, attr)
                setattr(module, attr, previous + [delta])  # a new list: never mutate one ComfyUI holds
                installed.append((module, attr, previous))
            return executor(x, t, *args, **kwargs)
        finally:
            for module, attr, previous in reversed(installed):
                setattr(module, attr, previous)

    def release_after_sampling(self, executor, *args, **kwargs):
        """OUTER_SAMPLE wrapper: the LoRA copies the deltas cached on the sampling device are dropped when the
        sampler call ends, so no adapter tensors stay on the card outside ComfyUI's memory accounting."""
        try:
            return executor(*args, **kwargs)
        finally:
            for delta in self.deltas.values():
                delta.release()


class WeightDelta:
    """Weight function ``W -> W + s·ΔW``, out of place, in ComfyUI's LoRA arithmetic."""

    def __init__(self, key: str, low_rank: tuple | None = None, adapter=None, strength: float = 1.0):
        """``low_rank`` = (up [out, r], down [r, in], scale); otherwise ``adapter`` goes through ComfyUI's
        ``calculate_weight`` at ``strength``."""
        self.key, self.low_rank, self.adapter, self.strength = key, low_rank, adapter, strength
        self._on_device: dict[torch.device, tuple] = {}
        self.weight_scale = 1.0  # scaled-fp8 layers store W / scale_weight: the delta is divided alike

    @classmethod
    def from_adapter(cls, key: str, adapter, strength: float) -> "WeightDelta":
        """From a ComfyUI weight adapter (what ``comfy.lora.load_lora`` returns for a file)."""
        pair = _low_rank(adapter)
        if pair is None:
            return cls(key, adapter=adapter, strength=strength)
        up, down, alpha = pair
        scale = strength * (float(alpha) / down.shape[0] if alpha is not None else 1.0)
        return cls(key, low_rank=(up.float(), down.float().flatten(1), scale))

    @classmethod
    def trainable(cls, key: str, up: torch.Tensor, down: torch.Tensor, scale: float) -> "WeightDelta":
        """The same weight function over parameters being trained (autograd reaches ``up`` and ``down``)."""
        return cls(key, low_rank=(up, down, scale))

    def release(self) -> None:
        """Drop the per-device copies (the next call makes them again)."""
        self._on_device.clear()

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        if self.low_rank is None:
            patch = [(self.strength, self.adapter, 1.0, None, None)]
            merged = comfy.lora.calculate_weight(patch, weight.to(torch.float32, copy=True) * self.weight_scale, self.key)
            return (merged / self.weight_scale).to(weight.dtype)
        up, down, scale = self.low_rank
        if up.requires_grad or down.requires_grad:
            up, down = up.to(weight.device), down.to(weight.device)
        else:  # the LoRA crosses to the GPU once, not every call
            if weight.device not in self._on_device:
                self._on_device[weight.device] = (up.to(weight.device), down.to(weight.device))
            up, down = self._on_device[weight.device]
        merged = torch.addmm(weight.flatten(1).float(), up, down, alpha=scale / self.weight_scale)
        return merged.reshape(weight.shape).to(weight.dtype)


def lora_to_patches(model_patcher, lora_sd: dict) -> tuple[dict, list[str]]:
    """Map a LoRA state dict onto a model as core LoraLoader does: {weight key: adapter}, unmatched keys."""
    key_map = comfy.lora.model_lora_keys_unet(model_patcher.model, {})
    patches = comfy.lora.load_lora(lora_sd, key_map, log_missing=False)
    used: set[str] = set()
    for adapter in patches.values():
        used.update(getattr(adapter, "loaded_keys", ()) or ())
    model_sd_keys = set(model_patcher.model.state_dict().keys())
    resolved = {k: a for k, a in patches.items() if isinstance(k, str) and k in model_sd_keys}
    unmatched = sorted(k for k in lora_sd if k not in used)
    return resolved, unmatched


def _low_rank(adapter):
    """(up, down, alpha) when the adapter is a plain 2-D LoRA pair, else None."""
    weights = getattr(adapter, "weights", None)
    if getattr(adapter, "name", None) != "lora" or weights is None:
        return None
    up, down, alpha, mid, dora_scale, reshape = (list(weights) + [None] * 6)[:6]
    if mid is not None or dora_scale is not None or reshape is not None or up.ndim != 2 or down.ndim != 2:
        return None
    return up, down, alpha


def build_deltas(model_patcher, patches: dict, strength: float, source: str) -> dict[str, WeightDelta]:
    """One weight function per adapted parameter; refuses layers it cannot gate, naming them."""
    deltas = {}
    for key, adapter in patches.items():
        module_path, _, param = key.rpartition(".")
        module = comfy.utils.get_attr(model_patcher.model, module_path)
        if not hasattr(module, param + "_function"):
            raise ValueError(f"identity adapter ({source}): {module_path} is not a ComfyUI (comfy.ops) layer, so "
                             "it cannot be gated; use core LoraLoaderModelOnly for an always-on LoRA.")
        weights = getattr(adapter, "weights", None)
        if weights is not None and len(weights) > 4 and weights[4] is not None:
            raise ValueError(f"identity adapter ({source}): {module_path} is a DoRA layer; DoRA rescales the "
                             "whole weight and cannot be gated. Use a plain LoRA, or core LoraLoaderModelOnly "
                             "for an always-on DoRA.")
        deltas[key] = WeightDelta.from_adapter(key, adapter, strength)
        deltas[key].weight_scale = layer_weight_scale(module)
    return deltas


def layer_weight_scale(module) -> float:
    """The factor a layer multiplies its stored weight by (scaled-fp8 checkpoints: ``scale_weight``), else 1."""
    scale = getattr(module, "scale_weight", None)
    if not isinstance(scale, torch.Tensor):
        return 1.0
    if scale.numel() != 1:
        raise ValueError(f"identity adapter: layer {type(module).__name__} has a per-channel fp8 scale "
                         f"{tuple(scale.shape)}; only per-tensor scaled fp8 is supported. Load the model with "
                         "weight_dtype default (a bf16/fp16 file) to use the adapter.")
    return float(scale)


def apply_gated_adapter(model_patcher, lora_sd: dict, strength: float, start_percent: float,
                        mode: str = "steps", source: str = "adapter"):
    """Clone ``model_patcher`` with ``lora_sd`` acting only in the gated part of sampling.

    Returns (new patcher, number of adapted weights, unmatched keys). Raises ValueError naming
    ``source`` when no key matches the model.
    """
    patches, unmatched = lora_to_patches(model_patcher, lora_sd)
    if not patches:
        family = type(model_patcher.model.model_config).__name__
        sample = ", ".join(sorted(lora_sd)[:3])
        raise ValueError(
            f"identity adapter ({source}): none of its {len(lora_sd)} keys match a weight of this {family} "
            f"model (first keys: {sample}). It was made for another model family or is not a LoRA; "
            "connect the model it was trained on.")
    if unmatched:
        log.warning("identity adapter (%s): %d of %d keys match no weight of this model and are not "
                    "applied: %s", source, len(unmatched), len(lora_sd), ", ".join(unmatched[:8]))
    gate = IdentityGate(start_percent, mode, build_deltas(model_patcher, patches, strength, source))
    patched = model_patcher.clone()
    if strength != 0.0 and start_percent < 1.0:
        key = f"personalvideo_gate_{uuid.uuid4().hex}"
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, key, gate.apply_model_wrapper)
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, key, gate.release_after_sampling)
    return patched, len(patches), unmatched
