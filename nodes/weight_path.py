"""One weight path for both branches of a training step, whatever the base weights' precision.

ComfyUI's layers choose how to compute from what they carry: with no weight function a layer may multiply in
its storage format (``fp8_ops`` with ``weight_dtype`` fp8_e4m3fn_fast on cards with fp8 compute: fp8 inputs
times fp8 weights; mixed-precision checkpoints: quantized matmul), while a layer with a weight function
dequantises its weight first (``comfy.ops.cast_bias_weight``). The gate installs the adapter's weight function
only in the adapter branch, so the two branches took different arithmetic: a fresh adapter already differed
from the source branch, and on ``fp8_ops`` the fp8 matmul has no gradient, so the adapter silently never
trained ("0 updated the adapter").

During a training run every adapted layer therefore carries a pass-through weight function (so the source
branch dequantises exactly as the adapter branch does), and every comfy.ops layer is marked ``training``:
``fp8_ops`` takes its fp8 matmul only in eval mode, and that matmul has no gradient, also in the layers
without an adapter that the gradient has to cross on its way back (on other comfy.ops layers the flag changes
nothing). Both branches then compute ``linear(x, dequantised W [+ s·ΔW])`` in the compute dtype, the gradient
reaches the adapter through every layer, and a fresh adapter equals the source branch bit for bit. Everything
is restored afterwards.
"""

from __future__ import annotations

import contextlib

import comfy.utils
import torch

_MISSING = object()


def _pass_through(weight: torch.Tensor) -> torch.Tensor:
    return weight


@contextlib.contextmanager
def same_weight_path(base_model: torch.nn.Module, weight_keys):
    """Within the block, every ComfyUI layer of ``base_model`` computes in the compute dtype (differentiably), and
    the layers owning ``weight_keys`` (keys inside ``base_model``) dequantise in every call, adapter or not."""
    adapted = {id(comfy.utils.get_attr(base_model, k.rpartition(".")[0])) for k in weight_keys}
    saved = []
    for m in base_model.modules():
        if not hasattr(m, "weight_function"):  # not a comfy.ops layer (dropout etc. keep their mode)
            continue
        saved.append((m, m.__dict__.get("weight_function", _MISSING), m.training))
        m.training = True  # fp8_ops: no fp8 matmul (it has no gradient) on the path back to the adapter
        if id(m) in adapted:
            m.weight_function = list(m.weight_function) + [_pass_through]  # a new list: never mutate ComfyUI's
    try:
        yield
    finally:
        for m, functions, training in saved:
            if functions is _MISSING:
                m.__dict__.pop("weight_function", None)  # back to the class attribute
            else:
                m.weight_function = functions
            m.training = training
