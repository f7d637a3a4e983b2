"""What the pack reads from a ComfyUI MODEL, and the trainable adapter attached to it.

The family is ComfyUI's own name for the model (its supported-model config class, e.g. ``WAN21_T2V``): the one
family vocabulary of the pack (adapter files record it, training/adapter/targets.py keys its rules by it).
"""

from __future__ import annotations

import uuid

import torch

import comfy.patcher_extension
import comfy.utils

from ...training.adapter.lora import LoRAParameters
from ...training.adapter.targets import AdapterTargets, select_targets
from .gate import IdentityGate, WeightDelta, layer_weight_scale


def model_family(model) -> str:
    """ComfyUI's name for the model's family (its supported-model config class), e.g. ``WAN21_T2V``."""
    return type(model.model.model_config).__name__


def adapter_targets(model, layers: str) -> AdapterTargets:
    """The weights to adapt, by the model family's native module names (training/adapter/targets.py); ValueError
    for a family the trainer does not support."""
    weights = {key: tuple(t.shape) for key, t in model.model.state_dict().items()}
    return select_targets(model_family(model), weights, layers)


def attach_trainable_adapter(model, shapes: dict[str, tuple[int, int]], rank: int, alpha: float, seed: int,
                             gate_start: float, device) -> tuple[LoRAParameters, IdentityGate, object]:
    """New trainable LoRA parameters, and a clone of ``model`` that applies them through the apply node's
    gate (the trainer switches it per run with ``gate.forced``)."""
    params = LoRAParameters(shapes, rank, alpha, seed=seed, device=device)
    deltas = {k: WeightDelta.trainable(k, up, down, params.scale) for k, (up, down) in params.pairs().items()}
    for key, delta in deltas.items():
        layer = key.rpartition(".")[0]
        delta.weight_scale = layer_weight_scale(comfy.utils.get_attr(model.model, layer), layer)
    gate = IdentityGate(gate_start, "steps", deltas)
    patched = model.clone()
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL,
                                 f"personalvideo_train_{uuid.uuid4().hex}", gate.apply_model_wrapper)
    return params, gate, patched


def computes_in_fp16(model, vae) -> bool:
    """The diffusion model or the VAE computes in fp16 (cards without bf16, --fp16-unet, --fp16-vae): the
    backward pass then needs loss scaling (training/loop/gradients.py)."""
    base = model.model
    compute = getattr(base, "manual_cast_dtype", None) or base.get_dtype()
    return torch.float16 in (compute, getattr(vae, "vae_dtype", None))
