"""Attention with a backward pass during training, whatever kernel ComfyUI was started with.

Sage attention's kernel has no backward, and flash attention's custom op registers none: with them the q/k/v
adapters get no gradient and only the output projection would train, silently. ComfyUI (0.3.75 has it)
lets ``transformer_options["optimized_attention_override"]`` take over every call of its attention functions
(``comfy.ldm.modules.attention.wrap_attn``), also where a model module bound ``optimized_attention`` at import
time, so the training model's options carry an override: kernels known to be differentiable run as they are
(so training computes what sampling computes); any other (sage, flash, kernels other packs registered) is
replaced by ComfyUI's PyTorch SDPA attention for the training run only (an override some other node set on the
model is set aside: it may route to such a kernel). A ComfyUI without the override hook
is refused when its attention kernel is not one of the differentiable ones. A pack that replaced the model
module's attention function outright bypasses the hook; the trainer then stops after its first step because
adapter layers got no gradient (training/loop/trainer.py), naming them.
"""

from __future__ import annotations

from comfy.ldm.modules import attention

from ...training.logs import pack_logger

log = pack_logger(__name__)
# ComfyUI's own kernels that autograd can differentiate (xformers' memory-efficient attention has a backward).
DIFFERENTIABLE = ("attention_basic", "attention_pytorch", "attention_sub_quad", "attention_split",
                  "attention_xformers")
OVERRIDE_KEY = "optimized_attention_override"


def _inner(fn):
    return getattr(fn, "__wrapped__", fn)


def _differentiable_kernels() -> set:
    return {_inner(getattr(attention, name)) for name in DIFFERENTIABLE if hasattr(attention, name)}


def _name(fn) -> str:
    return getattr(_inner(fn), "__name__", repr(fn))


class TrainingAttention:
    """The override: ``(func, *args, **kwargs)`` -> ``func``'s result, or SDPA's where ``func`` has no backward."""

    def __init__(self):
        self.replaced: set[str] = set()
        self._sdpa = _inner(attention.attention_pytorch)
        self._differentiable = _differentiable_kernels()

    def __call__(self, func, *args, **kwargs):
        if _inner(func) in self._differentiable:
            return func(*args, **kwargs)
        if _name(func) not in self.replaced:
            self.replaced.add(_name(func))
            log.info("PersonalVideo training: attention kernel %s has no backward; the training run uses "
                     "PyTorch SDPA attention instead (sampling outside training is unchanged)", _name(func))
        return self._sdpa(*args, **kwargs)


def use_differentiable_attention(patcher) -> TrainingAttention | None:
    """Install the override on ``patcher`` (the training clone). Returns it, or None where this ComfyUI has no
    override hook and its attention kernel is differentiable anyway; raises ValueError where it is not."""
    if not hasattr(attention, "wrap_attn"):
        current = _name(attention.optimized_attention)
        if _inner(attention.optimized_attention) in _differentiable_kernels():
            return None
        raise ValueError(
            f"attention: ComfyUI runs {current}, which has no backward, and this ComfyUI version cannot switch "
            "attention per model (no optimized_attention_override). Training needs gradient through attention: "
            "start ComfyUI without --use-sage-attention / --use-flash-attention for training (or update ComfyUI).")
    options = patcher.model_options.setdefault("transformer_options", {})
    if options.get(OVERRIDE_KEY) is not None:  # e.g. a node that routes attention to sage through the hook
        log.info("PersonalVideo training: the model's attention override (%r) is set aside for the training run "
                 "(it may route to a kernel without backward)", options[OVERRIDE_KEY])
    override = TrainingAttention()
    options[OVERRIDE_KEY] = override
    return override
