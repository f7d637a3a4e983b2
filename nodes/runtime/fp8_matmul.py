"""Gated calls on fp8-matmul layers compute as the layer does without the adapter: fp8 inputs times fp8 weights.

With ``weight_dtype`` fp8_e4m3fn_fast on a card with fp8 compute, UNETLoader builds ``comfy.ops.fp8_ops`` layers.
What they do when the layer carries a weight function (the hook the gate adds its delta through) changed:

- ComfyUI 0.3.75: still the fp8 matmul (``fp8_linear``); the weight functions get the fp8 weight and return one;
- ComfyUI 0.33: the layer leaves the fp8 matmul and multiplies the dequantised weight in the compute dtype.

So on 0.33 the gate moved every gated call off the arithmetic of the calls before it: a zero adapter changed the
video (0.6 % relative on the tiny Wan) and the last quarter of sampling lost the fp8 speed the user chose.
Core's own LoRA loading keeps fp8 models on the fp8 matmul on both versions: it bakes ``W + ΔW`` back into fp8
with stochastic rounding seeded by the weight's key (``ModelPatcher.patch_weight_to_device``; 0.33's dynamic VRAM
path requantises the same way), so a zero LoRA gives the base exactly. The gate follows that path:

- ``keep_fp8_matmul`` gives an fp8_ops layer, for one gated call, a ``forward_comfy_cast_weights`` that runs core's
  ``fp8_linear`` when every function on the layer is this gate's (with other functions, e.g. a lowvram LoRA patch,
  and in training, where ``same_weight_path`` adds its pass-through, the layer computes as its class does);
- ``round_to_storage`` is what the delta does with an fp8 weight: core's stochastic rounding of ``W + s·ΔW``
  (unbiased: a delta below fp8's step still acts on average, where round-to-nearest would drop it), keeping
  elements the delta leaves unchanged exactly (0.3.75's rounding moves some exact values by one step).
"""

from __future__ import annotations

import functools

import comfy.float
import comfy.model_patcher
import comfy.ops
import comfy.utils
import torch

from ...training.logs import pack_logger

log = pack_logger(__name__)
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
_WARNED: set[type] = set()


@functools.cache
def _seed(key: str) -> int:
    """Core's rounding seed for a weight key (0.33: comfy.utils; 0.3.75: comfy.model_patcher only)."""
    string_to_seed = getattr(comfy.utils, "string_to_seed", None) or comfy.model_patcher.string_to_seed
    return string_to_seed(key)


def round_to_storage(merged: torch.Tensor, weight: torch.Tensor, key: str) -> torch.Tensor:
    """``merged`` (the patched weight, float) in ``weight``'s dtype; fp8 as core's LoRA loading rounds it."""
    if weight.dtype not in FP8_DTYPES:
        return merged.to(weight.dtype)
    rounded = comfy.float.stochastic_rounding(merged, weight.dtype, seed=_seed(key))
    return torch.where(merged == weight.to(merged.dtype), weight, rounded)


def is_fp8_matmul_layer(module) -> bool:
    """A layer that multiplies fp8 by fp8 when it carries no weight function (weight_dtype fp8_e4m3fn_fast)."""
    fp8_ops = getattr(comfy.ops, "fp8_ops", None)
    return fp8_ops is not None and isinstance(module, fp8_ops.Linear) and hasattr(comfy.ops, "fp8_linear")


def keep_fp8_matmul(module, own_functions: frozenset) -> None:
    """Install (for one gated call; the caller restores ``forward_comfy_cast_weights``) the fp8 matmul on ``module``
    while the only weight/bias functions on it are the gate's (``own_functions``: their ids)."""
    fallback = module.__dict__.get("forward_comfy_cast_weights") or type(module).forward_comfy_cast_weights.__get__(module)

    def forward_comfy_cast_weights(input, *args, **kwargs):
        functions = list(module.weight_function) + list(module.bias_function)
        if not args and not kwargs and all(id(f) in own_functions for f in functions):
            try:
                out = comfy.ops.fp8_linear(module, input)
                if out is not None:
                    return out
            except Exception as e:  # noqa: BLE001 (core's fp8_ops catches alike: what fp8_linear cannot take
                # computes dequantised, logged)
                if type(e) not in _WARNED:  # once per kind of failure, not once per layer and call
                    _WARNED.add(type(e))
                    log.warning("PersonalVideo gate: no fp8 matmul in %s (%s: %s); computing dequantised",
                                type(module).__qualname__, type(e).__name__, e)
        return fallback(input, *args, **kwargs)

    module.forward_comfy_cast_weights = forward_comfy_cast_weights
