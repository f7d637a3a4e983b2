"""The isolated identity adapter inside ComfyUI: a LoRA that acts only late in sampling.

How it sits on ComfyUI's own machinery:

- The LoRA file is read as core LoraLoader reads it (``comfy.lora.model_lora_keys_unet`` +
  ``comfy.lora.load_lora``), giving ComfyUI weight adapters keyed by model weight.
- An ``APPLY_MODEL`` wrapper (core patcher extension) is added to a *clone* of the model patcher. For
  each model call it decides from the running sampler's schedule (``transformer_options["sample_sigmas"]``)
  and the call's sigma whether the gate is open (rule: training/adapter/gate.py). Only while a gated call runs
  does each adapted comfy.ops layer carry one more *weight function* (the hook ComfyUI's own LoRA trainer
  and lowvram LoRA patches use), which returns ``W + s·ΔW`` out of place for that forward. Quantized layers (fp8
  weights, fp8_scaled and mixed-precision checkpoints) instead compute that forward with the adapter merged into
  their stored weight as core's LoRA loading merges it, on their own fp8 path (fp8_matmul.py); an adapter
  that adds nothing to a weight (zero strength, an all-zero factor) leaves its layer as it is.

So before the gate the model runs exactly as without the adapter, with no extra work; base weights are
never modified and no backup exists; the input MODEL and every other clone are untouched (the wrapper
lives on the clone); LoRAs patched by core loaders before or after this node stay always on (their
patches reach the weight first) and offloading/lowvram are unaffected. Adding ΔW in weight space costs a
few passes over each adapted weight per gated call: cheaper than a bypass ``x·downᵀ·upᵀ`` once a video
has more than a few thousand tokens, which real ones do (Wan 480p, 81 frames: ~32k).
"""

from __future__ import annotations

import contextlib
import uuid

import torch

import comfy.lora
import comfy.patcher_extension
import comfy.utils

from ...training.adapter.gate import GATE_MODES, check_gate_start, gate_is_open
from .fp8_matmul import merge_per_forward, round_to_storage, stores_quantized
from .gate_schedule import LOCATOR
from ...training.logs import pack_logger

log = pack_logger(__name__)
_MISSING = object()


class IdentityGate:
    """Decides per model call whether the adapter acts, and makes it act for that call only."""

    def __init__(self, gate_start: float, mode: str, deltas: dict[str, "WeightDelta"]):
        if mode not in GATE_MODES:
            raise ValueError(f"gate_mode: got {mode!r}, expected one of {GATE_MODES}")
        self.gate_start = check_gate_start(gate_start)
        self.mode = mode
        self.deltas = deltas  # parameter key inside the BaseModel -> weight function
        self._own_functions = frozenset(id(d) for d in deltas.values())
        self._forced: bool | None = None  # set only inside ``forced``
        self._warned = False
        self.run_key = f"personalvideo_gate_{uuid.uuid4().hex}"  # this gate's decision in a run's options

    @contextlib.contextmanager
    def forced(self, on: bool):
        """Inside the block every model call runs with (``on``) or without the adapter, whatever the schedule:
        the trainer's adapter and source runs. Restores the previous state on exit (blocks may nest)."""
        previous, self._forced = self._forced, bool(on)
        try:
            yield self
        finally:
            self._forced = previous

    def gate_sigma(self, model_sampling, sample_sigmas: torch.Tensor | None,
                   noise_added: bool | None = None) -> float | None:
        """The sigma at or below which a call of a sampler run is gated, or None (never gated)."""
        if self.gate_start >= 1.0:
            return None
        if self.mode == "steps" and sample_sigmas is not None:
            return LOCATOR.steps_gate_sigma(model_sampling, sample_sigmas, self.gate_start, noise_added)
        if self.mode == "steps" and not self._warned:
            self._warned = True
            log.warning("PersonalVideo gate: this sampler does not report its sigma schedule "
                        "(sample_sigmas); gating by timestep fraction instead of steps")
        return float(model_sampling.percent_to_sigma(self.gate_start))

    def sampler_sample_wrapper(self, executor, *args, **kwargs):
        """Decides the gate once per sampler run, before the sampler starts: from its schedule as given (some
        samplers, e.g. uni_pc, overwrite its last sigma in place while they run) and whether the run adds
        noise at its start (a KSamplerAdvanced with add_noise off or a DisableNoise continuation passes all-zero
        noise). The decision travels in the run's transformer_options to every model call."""
        guider, sigmas, extra_args, _, noise = (list(args) + [None] * 5)[:5]  # (model_wrap, sigmas, extra_args,
        # callback, noise, latent_image, ...) as CFGGuider.inner_sample passes them
        model_sampling = getattr(getattr(guider, "inner_model", None), "model_sampling", None)
        if (isinstance(extra_args, dict) and isinstance(sigmas, torch.Tensor) and isinstance(noise, torch.Tensor)
                and not noise.is_nested and model_sampling is not None and sigmas.shape[-1] > 0):
            options = extra_args.setdefault("model_options", {}).setdefault("transformer_options", {})
            options[self.run_key] = self.gate_sigma(model_sampling, sigmas, bool(torch.count_nonzero(noise)))
        return executor(*args, **kwargs)

    def is_open(self, base_model, t, transformer_options: dict) -> bool:
        """Whether the model call at timestep/sigma ``t`` with these options runs with the adapter."""
        if self._forced is not None:
            return self._forced
        if self.run_key in transformer_options:  # decided at the start of this sampler run
            return gate_is_open(t, transformer_options[self.run_key])
        return gate_is_open(t, self.gate_sigma(base_model.model_sampling, transformer_options.get("sample_sigmas")))

    def apply_model_wrapper(self, executor, x, t, *args, **kwargs):
        base_model = executor.class_obj
        if not self.is_open(base_model, t, call_options(args, kwargs)):
            return executor(x, t, *args, **kwargs)
        with self.acting(base_model):
            return executor(x, t, *args, **kwargs)

    @contextlib.contextmanager
    def acting(self, base_model):
        """Inside the block the adapter acts on ``base_model``'s layers (one gated model call); restored on exit."""
        installed, modules, merges = [], {}, {}
        try:
            for key, delta in self.deltas.items():
                if delta.adds_nothing:
                    continue
                module_path, _, param = key.rpartition(".")
                module = comfy.utils.get_attr(base_model, module_path)
                attr = param + "_function"
                previous = getattr(module, attr)
                setattr(module, attr, previous + [delta])  # a new list: never mutate one ComfyUI holds
                installed.append((module, attr, previous))
                modules[id(module)] = module
                merges.setdefault(id(module), {})[param] = (key, delta.core_patches)
            for module_id, module in modules.items():  # quantized layers: merged as core's LoRA loading does
                if stores_quantized(module) and all(p is not None for _, p in merges[module_id].values()):
                    installed.append((module, "forward", module.__dict__.get("forward", _MISSING)))
                    merge_per_forward(module, merges[module_id], self._own_functions)
            yield
        finally:
            for module, attr, previous in reversed(installed):
                if previous is _MISSING:
                    module.__dict__.pop(attr, None)  # back to the class's method
                else:
                    setattr(module, attr, previous)

    def release_after_sampling(self, executor, *args, **kwargs):
        """OUTER_SAMPLE wrapper: the LoRA copies the deltas cached on the sampling device are dropped when the
        sampler call ends, so no adapter tensors stay on the card outside ComfyUI's memory accounting."""
        try:
            return executor(*args, **kwargs)
        finally:
            for delta in self.deltas.values():
                delta.release()


def call_options(args: tuple, kwargs: dict) -> dict:
    """The transformer_options of an APPLY_MODEL call (c_concat, c_crossattn, control, transformer_options, ...)."""
    options = kwargs.get("transformer_options")
    if options is None:
        options = args[3] if len(args) > 3 else {}
    return options


class WeightDelta:
    """Weight function ``W -> W + s·ΔW``, out of place, in ComfyUI's LoRA arithmetic."""

    def __init__(self, key: str, low_rank: tuple | None = None, adapter=None, strength: float = 1.0):
        """``low_rank`` = (up [out, r], down [r, in], scale); otherwise ``adapter`` goes through ComfyUI's
        ``calculate_weight`` at ``strength``."""
        self.key, self.low_rank, self.adapter, self.strength = key, low_rank, adapter, strength
        self._on_device: dict[torch.device, tuple] = {}
        self.weight_scale = 1.0  # scaled-fp8 layers store W / scale_weight: the delta is divided alike
        self.adds_nothing = False  # set for fixed adapters (from_adapter); trained deltas always act

    @property
    def core_patches(self) -> list | None:
        """This delta as core's ``ModelPatcher.add_patches`` lists a LoRA file's patch (LoraLoaderModelOnly at
        ``strength``), for merging as core does (fp8_matmul.py); None for deltas being trained."""
        return None if self.adapter is None else [(self.strength, self.adapter, 1.0, None, None)]

    @classmethod
    def from_adapter(cls, key: str, adapter, strength: float) -> "WeightDelta":
        """From a ComfyUI weight adapter (what ``comfy.lora.load_lora`` returns for a file)."""
        pair = low_rank(adapter)
        if pair is None:
            delta = cls(key, adapter=adapter, strength=strength)
            delta.adds_nothing = strength == 0.0
            return delta
        up, down, alpha = pair
        scale = strength * (float(alpha) / down.shape[0] if alpha is not None else 1.0)
        delta = cls(key, low_rank=(up.float(), down.float().flatten(1), scale), adapter=adapter, strength=strength)
        # A delta that is exactly zero (zero strength or alpha, an all-zero factor) acts not at all: a zero adapter is
        # the base exactly, also on quantized layers, where core's re-quantisation of an unchanged weight (a
        # recalculated scale on 0.33) is not.
        delta.adds_nothing = scale == 0.0 or not torch.any(up) or not torch.any(down)
        return delta

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
            return round_to_storage(merged / self.weight_scale, weight, self.key)
        up, down, scale = self.low_rank
        if up.requires_grad or down.requires_grad:
            up, down = up.to(weight.device), down.to(weight.device)
        else:  # the LoRA crosses to the GPU once, not every call
            if weight.device not in self._on_device:
                self._on_device[weight.device] = (up.to(weight.device), down.to(weight.device))
            up, down = self._on_device[weight.device]
        merged = torch.addmm(weight.flatten(1).float(), up, down, alpha=scale / self.weight_scale)
        return round_to_storage(merged.reshape(weight.shape), weight, self.key)


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


def low_rank(adapter):
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
        deltas[key].weight_scale = layer_weight_scale(module, module_path)
    return deltas


def layer_weight_scale(module, name: str = "") -> float:
    """The factor a layer multiplies its stored weight by (scaled-fp8 model files: ``scale_weight``), else 1.
    ``name``: the layer's path in the model, for the error."""
    scale = getattr(module, "scale_weight", None)
    if not isinstance(scale, torch.Tensor):
        return 1.0
    if scale.numel() != 1:
        raise ValueError(f"identity adapter: layer {name or type(module).__name__} has a per-channel fp8 scale "
                         f"{tuple(scale.shape)}; only per-tensor scaled fp8 is supported. Load the model with "
                         "weight_dtype default (a bf16/fp16 file) to use the adapter.")
    return float(scale)


def apply_gated_adapter(model_patcher, lora_sd: dict, strength: float, gate_start: float,
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
    gate = IdentityGate(gate_start, mode, build_deltas(model_patcher, patches, strength, source))
    patched = model_patcher.clone()
    if strength != 0.0 and gate.gate_start < 1.0:
        key = gate.run_key
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, key, gate.apply_model_wrapper)
        sampler_sample = getattr(comfy.patcher_extension.WrappersMP, "SAMPLER_SAMPLE", None)
        if sampler_sample is not None:  # without it the gate is decided per call from the schedule alone
            patched.add_wrapper_with_key(sampler_sample, key, gate.sampler_sample_wrapper)
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, key, gate.release_after_sampling)
    return patched, len(patches), unmatched
