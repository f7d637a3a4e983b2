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

Streamed layers hand a forward its weight in memory that is reused after that forward: ComfyUI 0.33's DynamicVRAM
(``ModelPatcherDynamic``: layers with a VBAR allocation ``_v``) casts into VBAR pages that are unpinned after the
layer and evicted under memory pressure, or into a rotating cast buffer when no page is free; its classic lowvram
path (layers marked ``prev_comfy_cast_weights``) casts into per-stream cast buffers. Autograd keeps the weight of a
linear layer for backward (the input's gradient needs it), so a weight aliasing that memory would be read after it
was overwritten: a wrong gradient without an error (VBAR memory) or an in-place error (0.33's cast buffers). Every
streamed layer therefore gets a function that gives a gradient-carrying forward its own copy of the weight
(``_owned``); it also serves as the pass-through on adapted streamed layers. Copies exist only while autograd keeps
them (with checkpoint_blocks: one block's, during its recomputation and backward).

A load resets every layer's functions (``ModelPatcher.load`` for lowvram layers, ``ModelPatcherDynamic.load``'s
``setup_param`` for all), and a training step loads the model again mid-step (the decode's ``load_models_gpu``, so
that making room for the VAE cannot unload it; 0.33's DynamicVRAM runs its whole load each time). The functions are
therefore installed again after every load inside the block (an ``ON_LOAD`` callback on the patcher): the gated
calls that backward recomputes after the decode keep them.
"""

from __future__ import annotations

import contextlib
import uuid

import comfy.ops
import comfy.patcher_extension
import comfy.utils
import torch


def _pass_through(weight: torch.Tensor) -> torch.Tensor:
    return weight


def _owned(weight: torch.Tensor) -> torch.Tensor:
    """The weight of a streamed layer, as memory of its own when autograd may keep it for backward."""
    return weight.clone() if torch.is_grad_enabled() else weight


def streams_weights(layer) -> bool:
    """A layer whose forward gets its weight in reused memory (DynamicVRAM's VBAR, 0.33's lowvram cast buffers)."""
    return hasattr(layer, "_v") or hasattr(layer, "prev_comfy_cast_weights")


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
def same_weight_path(patcher, weight_keys):
    """Within the block, every ComfyUI layer of ``patcher``'s model computes in the compute dtype (differentiably),
    and the layers owning ``weight_keys`` (keys inside the model) dequantise in every call, adapter or not."""
    base_model = patcher.model
    adapted = {id(comfy.utils.get_attr(base_model, k.rpartition(".")[0])) for k in weight_keys}
    ours = (_owned, _pass_through)
    saved = {}

    def install(*_load_args):  # on entry and after every load: a load resets the layers' functions
        for m in base_model.modules():
            if not hasattr(m, "weight_function"):  # not a comfy.ops layer (dropout etc. keep their mode)
                continue
            if id(m) not in saved:
                instance = {n: m.__dict__[n] for n in ("forward_comfy_cast_weights", "_full_precision_mm")
                            if n in m.__dict__}
                saved[id(m)] = (m, "weight_function" in m.__dict__, m.training, instance)
                m.training = True  # fp8_ops: no fp8 matmul (it has no gradient) on the path back to the adapter
                if isinstance(m, torch.nn.Linear) and hasattr(m, "scale_weight"):
                    m.forward_comfy_cast_weights = _dequantised_linear(m)  # scaled fp8: its fp8 matmul ignores it
                if hasattr(m, "_full_precision_mm"):
                    m._full_precision_mm = True  # mixed-precision (quantized) model files: dequantise
            own = _owned if streams_weights(m) else _pass_through if id(m) in adapted else None
            functions = [f for f in m.weight_function if f not in ours]  # a new list: never mutate ComfyUI's
            m.weight_function = functions + ([own] if own is not None else [])

    key = f"personalvideo_weight_path_{uuid.uuid4().hex}"
    install()
    patcher.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_LOAD, key, install)
    try:
        yield
    finally:
        patcher.remove_callbacks_with_key(comfy.patcher_extension.CallbacksMP.ON_LOAD, key)
        for m, had_functions, training, instance in saved.values():
            functions = [f for f in m.weight_function if f not in ours]  # what the last load gave the layer
            if functions or had_functions:
                m.weight_function = functions
            else:
                m.__dict__.pop("weight_function", None)  # back to the class attribute
            m.training = training
            for name in ("forward_comfy_cast_weights", "_full_precision_mm"):
                m.__dict__.pop(name, None)
                if name in instance:
                    setattr(m, name, instance[name])
