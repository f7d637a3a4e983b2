"""Tiny diffusion models written the way ComfyUI's quantized checkpoints are laid out (tests and benchmarks).

The layouts are what ComfyUI's loaders look for (0.3.75: comfy/model_detection.py ``model_config_from_unet`` and
comfy/ops.py ``scaled_fp8_ops`` / ``mixed_precision_ops``; 0.33: comfy/utils.py ``convert_old_quants`` and
``detect_layer_quantization``, comfy/ops.py ``_load_quantized_module``):

- ``scaled_fp8``: Comfy-Org's "fp8_scaled" releases, the Wan 2.2 files most users download
  (wan2.2_t2v_{high,low}_noise_14B_fp8_scaled.safetensors). Every Linear weight is stored as float8_e4m3fn ``W / s``
  with a float32 ``<layer>.scale_weight`` ``s`` (per tensor: shape []; per output channel: [out, 1]) and a
  ``<layer>.scale_input`` of 1.0, plus the ``scaled_fp8`` marker key: an empty fp8 tensor (fp8 matmul where the
  card has fp8 compute) or, with ``full_precision_mm``, a 2-element one (dequantised matmul). 0.3.75 builds
  ``scaled_fp8_ops`` layers from it; 0.33 converts it into its mixed-precision format (``weight_scale``, a
  ``comfy_quant`` entry per layer; a 1.0 input scale is dropped).
- ``comfy_quant``: 0.33's own format (what it saves, and what newer Comfy-Org "fp8mixed"/fp8 files carry): fp8
  ``<layer>.weight``, float32 ``<layer>.weight_scale``, ``<layer>.comfy_quant`` (JSON ``{"format": "float8_e4m3fn"}``
  as uint8). The same layers are listed in the header's ``_quantization_metadata``, where 0.3.75 reads them (it
  does not know the per-layer keys).

``dequantised`` next to each: the same weights as float32 ``fp8 · s`` (exact), the reference the scaled model
computes when it does not multiply in fp8.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FP8 = torch.float8_e4m3fn
LAYOUTS = ("scaled_fp8", "comfy_quant")


def quantize(weight: torch.Tensor, per_channel: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 values, scale) with ``weight ≈ fp8 · scale``: absmax scaling, per tensor or per output channel."""
    amax = weight.abs().amax(dim=1, keepdim=True) if per_channel else weight.abs().max()
    scale = (amax.float() / torch.finfo(FP8).max).clamp_min(1e-12)
    return (weight.float() / scale).to(FP8), scale


def write_quantized(source: Path | str, out: Path | str, layout: str = "scaled_fp8", per_channel: bool = False,
                    full_precision_mm: bool = False) -> tuple[Path, Path]:
    """Write ``source`` (a float diffusion model file) as ``layout``; returns (the quantized file, the same weights
    dequantised in float32, named ``<out stem>_dequantised.safetensors``)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout: got {layout!r}, expected one of {LAYOUTS}")
    out = Path(out)
    reference = out.with_name(out.stem + "_dequantised.safetensors")
    sd, quantized, dequantised, layers = load_file(str(source)), {}, {}, {}
    for key, value in sd.items():
        if not (key.endswith(".weight") and value.ndim == 2):  # every Linear weight, as ComfyUI's converters do
            quantized[key] = dequantised[key] = value
            continue
        layer = key[: -len(".weight")]
        q, scale = quantize(value, per_channel)
        quantized[key], dequantised[key] = q, q.float() * scale
        scale = scale if per_channel else scale.reshape(())
        if layout == "scaled_fp8":
            quantized[layer + ".scale_weight"] = scale
            quantized[layer + ".scale_input"] = torch.ones((), dtype=torch.float32)
        else:
            quantized[layer + ".weight_scale"] = scale
            quantized[layer + ".comfy_quant"] = torch.tensor(list(json.dumps({"format": "float8_e4m3fn"}).encode()),
                                                             dtype=torch.uint8)
            layers[layer] = {"format": "float8_e4m3fn"}
    metadata = None
    if layout == "scaled_fp8":
        quantized["scaled_fp8"] = torch.zeros(2 if full_precision_mm else 0, dtype=FP8)
    else:
        metadata = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(quantized, str(out), metadata=metadata)
    save_file(dequantised, str(reference))
    return out, reference
