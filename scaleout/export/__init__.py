"""Adapters in ComfyUI-native LoRA keys with the pack's metadata, so core LoraLoaderModelOnly and the pack's
Load/Apply nodes read them. Per family: wan.py (rename), hunyuan.py (q/k/v fusion), animatediff.py (kohya names).
A key that has no native name is an error: ComfyUI would only log "lora key not loaded" and load the rest.

Which layers a Wan or HunyuanVideo adapter has is decided on the native names, by the node side's rule
(training/adapter/targets.py): ``native_targets`` maps every linear layer of the diffusers blocks to the native
weight it is (or is fused into), selects those weights as the trainer node would on ComfyUI's model, and adapts
the diffusers layers behind them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ...training.adapter.files import build_metadata, save_adapter
from ...training.adapter.targets import AdapterTargets, select_targets


def native_targets(transformer: torch.nn.Module, family: str, layers: str, native_key: Callable[[str], str],
                   block_prefixes: tuple[str, ...]) -> tuple[AdapterTargets, dict[str, str]]:
    """(the native weights ``layers`` adapts in this ComfyUI ``family``, {diffusers module: its native weight key})
    for the linear layers inside the blocks (``block_prefixes``). ``native_key(name)``: the native weight a diffusers
    module is, or is fused into (its rows); ValueError for a module without one, which is then never adapted.
    A fused native weight's shape is its members' output widths stacked."""
    members: dict[str, list[str]] = {}
    shapes: dict[str, tuple[int, int]] = {}
    for name, module in transformer.named_modules():
        if not isinstance(module, torch.nn.Linear) or not name.startswith(block_prefixes):
            continue
        try:
            key = native_key(name)
        except ValueError:
            continue
        members.setdefault(key, []).append(name)
        rows = shapes.get(key, (0, module.in_features))[0]
        shapes[key] = (rows + module.out_features, module.in_features)
    targets = select_targets(family, shapes, layers)
    return targets, {name: key for key, names in members.items() if key in targets.shapes for name in names}


def write_comfyui_lora(path: str | Path, tensors: dict[str, torch.Tensor], gate_start: float, base_model: str,
                       expert: str = "", metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` (native keys) atomically as a safetensors LoRA with the pack's header fields;
    ``metadata`` adds or overrides fields (names with or without the ``personalvideo.`` prefix)."""
    extra = {k.removeprefix("personalvideo."): str(v) for k, v in (metadata or {}).items()}
    meta = build_metadata(tensors, gate_start, base_model, extra={"trainer": "scaleout"} | extra, expert=expert)
    return save_adapter(path, tensors, meta)
