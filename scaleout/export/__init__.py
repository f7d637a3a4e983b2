"""Adapters in ComfyUI-native LoRA keys with the pack's metadata, so core LoraLoaderModelOnly and the pack's
Load/Apply nodes read them. Per family: wan.py (rename), hunyuan.py (q/k/v fusion), animatediff.py (kohya names).
A key that has no native name is an error: ComfyUI would only log "lora key not loaded" and load the rest."""

from __future__ import annotations

from pathlib import Path

import torch

from ...training.adapter.files import build_metadata, save_adapter

PACK_VERSION = "0.1.0"  # pyproject's version; scaleout has no ComfyUI entry point to read it from


def adapted_modules(transformer: torch.nn.Module, layers: str, native_key,
                    block_prefixes: tuple[str, ...]) -> list[str]:
    """The linear layers inside the blocks that the node side adapts (nodes/train_nodes.py: attention projections,
    or those and the MLPs), judged on their native names (``native_key(name)``) as ComfyUI's model shows them."""
    names = []
    for name, module in transformer.named_modules():
        if not isinstance(module, torch.nn.Linear) or not name.startswith(block_prefixes):
            continue
        native = native_key(name).lower()
        if "attn" in native or (layers == "attention+mlp" and any(t in native for t in ("mlp", "ffn", "linear"))):
            names.append(name)
    return names


def lora_tensors(pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], alpha: float) -> dict[str, torch.Tensor]:
    """{native module prefix: (up, down)} -> ``<prefix>.lora_up.weight`` / ``.lora_down.weight`` / ``.alpha``."""
    out = {}
    for prefix, (up, down) in pairs.items():
        out[f"{prefix}.lora_up.weight"] = up.detach().to("cpu", torch.float32).contiguous()
        out[f"{prefix}.lora_down.weight"] = down.detach().to("cpu", torch.float32).contiguous()
        out[f"{prefix}.alpha"] = torch.tensor(float(alpha))
    return out


def write_comfyui_lora(path: str | Path, tensors: dict[str, torch.Tensor], gate_start: float, base_model: str,
                       expert: str = "", metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` (native keys) atomically as a safetensors LoRA with the pack's header fields;
    ``metadata`` adds or overrides fields (names with or without the ``personalvideo.`` prefix)."""
    extra = {k.removeprefix("personalvideo."): str(v) for k, v in (metadata or {}).items()}
    meta = build_metadata(tensors, gate_start, base_model, PACK_VERSION, extra={"trainer": "scaleout"} | extra,
                          expert=expert)
    return save_adapter(path, tensors, meta)
