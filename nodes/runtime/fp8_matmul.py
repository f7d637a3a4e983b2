"""Gated calls on quantized layers compute as core's LoRA loading makes those layers compute.

Quantized layers: fp8 weights (UNETLoader weight_dtype fp8_e4m3fn / fp8_e4m3fn_fast), scaled-fp8 checkpoints
(Comfy-Org's "fp8_scaled" files: ``scaled_fp8`` marker, per-layer ``scale_weight``) and mixed-precision
checkpoints (``comfy_quant`` / ``_quantization_metadata``; ComfyUI 0.33 also converts scaled-fp8 files into these,
``comfy.utils.convert_old_quants``), whose weights are ``QuantizedTensor``\\ s.

What core LoraLoader does on them (``ModelPatcher.patch_weight_to_device``, 0.3.75 and 0.33; 0.33's DynamicVRAM
and lowvram paths are below): the stored weight is cast to float (float32; 0.33: ``lora_compute_dtype``, fp16 on
most GPUs), converted by the layer (``convert_weight``: times ``scale_weight``, or dequantised), the LoRA added
(``comfy.lora.calculate_weight``) and the result stored back in the layer's format (``set_weight``: divided by
``scale_weight``, or re-quantised with a recalculated per-tensor scale; plain fp8 weights:
``comfy.float.stochastic_rounding``), rounding stochastically with a seed from the weight's key. The layer then
computes as it did: its fp8 / quantized matmul where the card has fp8 compute, dequantised where not.

A weight function (the hook the gate uses on other layers) cannot do that: a layer carrying one dequantises and
leaves its fp8 matmul on 0.33 (fp8_ops, mixed precision: ``_use_quantized`` needs no weight function), and the
function never sees the stored fp8 values. With it, a zero adapter moved the fp8_scaled Wan 0.5 % off the base and
the gate from step 0 was 1.5 % off LoraLoaderModelOnly on 0.33. So, for one gated call, each adapted quantized
layer gets a ``forward`` (``merge_per_forward``) that stores what core's LoRA loading stores (``merge_as_core``),
puts it in place of the layer's weight for that forward only, and runs the layer's own forward without the gate's
functions: the gate from step 0 computes what LoraLoaderModelOnly computes, bit for bit, through the layer's own
fp8 path. One merged weight exists at a time (the layer's, during its forward), made on the device the layer
computes on from the weight the layer holds (on 0.33's DynamicVRAM a streamed layer holds its host copy: the merged
weight is cast from there and the gated forward does not read the VBAR).

Where this is not what core would do, the gate's weight function acts instead (the layer computes dequantised, as
its class does with weight functions; ``round_to_storage`` rounds a merge into an fp8 weight as core does):
- the layer carries other functions: a LoRA core applies per call (lowvram ``LowVramPatch``, 0.33 DynamicVRAM's
  ``weight_lowvram_function``) or a weight wrapper; the adapter then comes after them, as a patch applied later;
- the deltas are being trained (no merge: stochastic rounding has no gradient; the trainer computes both branches
  dequantised, weight_path.py).
"""

from __future__ import annotations

import functools

import comfy.float
import comfy.lora
import comfy.model_management
import comfy.model_patcher
import comfy.utils
import torch

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
PARAMS = ("weight", "bias")
_MISSING = object()


@functools.cache
def _seed(key: str) -> int:
    """Core's rounding seed for a weight key (0.33: comfy.utils; 0.3.75: comfy.model_patcher only)."""
    string_to_seed = getattr(comfy.utils, "string_to_seed", None) or comfy.model_patcher.string_to_seed
    return string_to_seed(key)


def _quantized_tensor_type():
    import comfy.quant_ops  # 0.3.75 and 0.33 (0.33 re-exports comfy_kitchen's class)

    return getattr(comfy.quant_ops, "QuantizedTensor", ())


def stores_quantized(module) -> bool:
    """Whether ``module`` keeps its weight in fp8 or as a QuantizedTensor (what core's LoRA loading re-quantises)."""
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.Tensor) and (isinstance(weight, _quantized_tensor_type())
                                                 or weight.dtype in FP8_DTYPES)


def _merge_dtype(device: torch.device) -> torch.dtype:
    """The dtype core's ``patch_weight_to_device`` merges a LoRA in: 0.33's ``lora_compute_dtype``, else float32."""
    lora_compute_dtype = getattr(comfy.model_management, "lora_compute_dtype", None)
    return lora_compute_dtype(device) if lora_compute_dtype is not None else torch.float32


def merge_as_core(module, param: str, key: str, patches: list, device: torch.device) -> torch.Tensor:
    """What core's LoRA loading stores for ``module``'s ``param`` (model key ``key``) with ``patches`` (entries as
    ``ModelPatcher.add_patches`` makes them) on ``device``: ``patch_weight_to_device``'s arithmetic, step by step."""
    weight = getattr(module, param)
    convert, store = getattr(module, "convert_" + param, None), getattr(module, "set_" + param, None)
    temp = comfy.model_management.cast_to_device(weight, device, _merge_dtype(device), copy=True)
    if convert is not None:
        temp = convert(temp, inplace=True)
    merged = comfy.lora.calculate_weight(patches, temp, key)
    if store is None:
        return comfy.float.stochastic_rounding(merged, weight.dtype, seed=_seed(key))
    return store(merged, inplace_update=False, seed=_seed(key), return_weight=True)


def _other_functions(module, own_functions: frozenset) -> bool:
    """Whether ``module`` carries functions that are not the gate's (a per-call LoRA patch, a weight wrapper)."""
    functions = list(getattr(module, "weight_function", ())) + list(getattr(module, "bias_function", ()))
    lowvram = [getattr(module, p + "_lowvram_function", None) for p in PARAMS]  # 0.33 DynamicVRAM's LoRA patches
    return any(id(f) not in own_functions for f in functions) or any(f is not None for f in lowvram)


def _input_device(args, kwargs) -> torch.device:
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device
    raise ValueError("a gated layer was called without a tensor input")


def merge_per_forward(module, merges: dict[str, tuple[str, list]], own_functions: frozenset) -> None:
    """Install (for one gated call; the caller restores ``forward``) a ``forward`` on ``module`` that, while the
    only functions on it are the gate's (``own_functions``: their ids), computes with ``merges`` merged as core's
    LoRA loading merges them ({param: (model key, patches)}), through the layer's own forward."""
    inner = module.__dict__.get("forward") or type(module).forward.__get__(module)

    def forward(*args, **kwargs):
        if _other_functions(module, own_functions):
            return inner(*args, **kwargs)
        device = _input_device(args, kwargs)
        merged = {p: merge_as_core(module, p, key, patches, device) for p, (key, patches) in merges.items()}
        stored = {p: module._parameters[p] for p in merged}
        functions = {f"{p}_function": module.__dict__.get(f"{p}_function", _MISSING) for p in PARAMS}
        try:
            for p, value in merged.items():
                module._parameters[p] = torch.nn.Parameter(value, requires_grad=False)
            for name in functions:
                setattr(module, name, [f for f in getattr(module, name) if id(f) not in own_functions])
            return inner(*args, **kwargs)
        finally:
            module._parameters.update(stored)
            for name, value in functions.items():
                if value is _MISSING:
                    module.__dict__.pop(name, None)  # back to the class attribute
                else:
                    setattr(module, name, value)

    module.forward = forward


def round_to_storage(merged: torch.Tensor, weight: torch.Tensor, key: str) -> torch.Tensor:
    """``merged`` (the patched weight, float) in ``weight``'s dtype, for the gate's weight function: an fp8 weight
    (an fp8 layer casting with weight functions on 0.3.75) as core's LoRA loading rounds it (stochastically, seeded
    by the key; unbiased: a delta below fp8's step still acts on average), keeping elements the delta leaves
    unchanged exactly (0.3.75's rounding moves some exact values by one step)."""
    if weight.dtype not in FP8_DTYPES:
        return merged.to(weight.dtype)
    rounded = comfy.float.stochastic_rounding(merged, weight.dtype, seed=_seed(key))
    return torch.where(merged == weight.to(merged.dtype), weight, rounded)
