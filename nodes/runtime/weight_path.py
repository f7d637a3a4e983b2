"""One weight path for both runs of a training step (source and tuned), whatever the base weights' precision.

ComfyUI's layers choose how to compute from what they carry: with no weight function a layer may multiply in
its storage format (``fp8_ops`` with ``weight_dtype`` fp8_e4m3fn_fast on cards with fp8 compute: fp8 inputs
times fp8 weights; mixed-precision model files: quantized matmul), while a layer with a weight function
dequantises its weight first (``comfy.ops.cast_bias_weight``). The gate installs the adapter's weight function
only in the tuned run, so the two runs took different arithmetic: a fresh adapter already differed
from the source run, and on ``fp8_ops`` the fp8 matmul has no gradient, so the adapter silently never
trained ("0 updated the adapter").

During a training run every adapted layer therefore carries a pass-through weight function (so the source
run dequantises exactly as the tuned run does), and every comfy.ops layer is marked ``training``:
``fp8_ops`` takes its fp8 matmul only in eval mode, and that matmul has no gradient, also in the layers
without an adapter that the gradient has to cross on its way back (on other comfy.ops layers the flag changes
nothing); scaled-fp8 layers, whose fp8 matmul does not look at that flag, and mixed-precision (quantized)
layers are switched to their dequantising path directly. Both runs then compute
``linear(x, dequantised W [+ s·ΔW])`` in the compute dtype, the gradient reaches the adapter through every
layer, and a fresh adapter equals the source run bit for bit. Everything is restored afterwards.
"""

from __future__ import annotations

import contextlib

import comfy.ops
import comfy.utils
import torch

_MISSING = object()


def _pass_through(weight: torch.Tensor) -> torch.Tensor:
    return weight


def _dequantised_linear(layer):
    """A comfy.ops Linear's cast path (``cast_bias_weight``: dequantise, weight functions), then ``linear`` with the
    layer's fp8 scale applied as scaled_fp8_ops applies it: what the layer computes without fp8 matmul."""
    def forward(input, *args, **kwargs):
        weight, bias, stream = comfy.ops.cast_bias_weight(layer, input, offloadable=True)
        scale = getattr(layer, "scale_weight", None)
        if scale is not None:
            weight = weight * scale.to(device=weight.device, dtype=weight.dtype)
        out = torch.nn.functional.linear(input, weight, bias)
        comfy.ops.uncast_bias_weight(layer, weight, bias, stream)
        return out
    return forward


@contextlib.contextmanager
def same_weight_path(base_model: torch.nn.Module, weight_keys):
    """Within the block, every ComfyUI layer of ``base_model`` computes in the compute dtype (differentiably), and
    the layers owning ``weight_keys`` (keys inside ``base_model``) dequantise in every call, adapter or not."""
    adapted = {id(comfy.utils.get_attr(base_model, k.rpartition(".")[0])) for k in weight_keys}
    saved = []
    for m in base_model.modules():
        if not hasattr(m, "weight_function"):  # not a comfy.ops layer (dropout etc. keep their mode)
            continue
        instance = {n: m.__dict__[n] for n in ("forward_comfy_cast_weights", "_full_precision_mm") if n in m.__dict__}
        saved.append((m, m.__dict__.get("weight_function", _MISSING), m.training, instance))
        m.training = True  # fp8_ops: no fp8 matmul (it has no gradient) on the path back to the adapter
        if isinstance(m, torch.nn.Linear) and hasattr(m, "scale_weight"):
            m.forward_comfy_cast_weights = _dequantised_linear(m)  # scaled fp8: its fp8 matmul ignores `training`
        if hasattr(m, "_full_precision_mm"):
            m._full_precision_mm = True  # mixed-precision (quantized) model files: dequantise, no quantized matmul
        if id(m) in adapted:
            m.weight_function = list(m.weight_function) + [_pass_through]  # a new list: never mutate ComfyUI's
    try:
        yield
    finally:
        for m, functions, training, instance in saved:
            if functions is _MISSING:
                m.__dict__.pop("weight_function", None)  # back to the class attribute
            else:
                m.weight_function = functions
            m.training = training
            for name in ("forward_comfy_cast_weights", "_full_precision_mm"):
                m.__dict__.pop(name, None)
                if name in instance:
                    setattr(m, name, instance[name])
