"""Which 2-D weights of a video transformer get the identity adapter: per family, by its native module names.

``layers = "attention"`` adapts the attention projections of the transformer blocks (query, key, value and
output; self- and cross-attention), ``"attention+mlp"`` also the blocks' feed-forward layers. Never adapted:
modulation (adaLN) layers, embedders, the text-side token refiner and the output head.

HunyuanVideo's single-stream blocks compute attention's q, k, v and the MLP's input in one fused ``linear1``
(rows [3·hidden | mlp_hidden]) and its output and the MLP's output in one fused ``linear2``. They count as
attention, whole: they are two thirds of HunyuanVideo's blocks (40 of 60), so leaving them out would leave most
of its attention untouched, and one LoRA pair per weight (the ComfyUI LoRA format every loader reads) cannot
adapt only the q/k/v rows. The MLP rows come along; they are the same layer. HunyuanVideo 1.5 uses the same
block classes (same rule); a model without single-stream blocks (the tiny one in the tests) gets the double
blocks' q/k/v and output projections alone.

Families are named by ComfyUI's model config class (``type(model.model.model_config).__name__``). A family not
listed is refused with a message naming it and the supported ones: a rule guessed from substrings could adapt
nothing, or the wrong layers, without a word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LAYER_CHOICES = ("attention", "attention+mlp")


@dataclass(frozen=True)
class FamilyTargets:
    name: str
    attention: str  # regex on the module path inside the diffusion model (``<path>.weight``)
    mlp: str


_WAN = FamilyTargets("Wan 2.1 / 2.2", attention=r"blocks\.\d+\.(self_attn|cross_attn)\.(q|k|v|o)",
                     mlp=r"blocks\.\d+\.ffn\.(0|2)")
_HUNYUAN_ATTENTION = r"double_blocks\.\d+\.(img|txt)_attn\.(qkv|proj)|single_blocks\.\d+\.linear(1|2)"
_HUNYUAN_MLP = r"double_blocks\.\d+\.(img|txt)_mlp\.(0|2)"

# ComfyUI model config class -> the family's targets. Wan 2.2 A14B experts load as WAN21_T2V, 5B as WAN22_T2V.
FAMILIES = {
    "WAN21_T2V": _WAN,
    "WAN22_T2V": _WAN,
    "HunyuanVideo": FamilyTargets("HunyuanVideo", _HUNYUAN_ATTENTION, _HUNYUAN_MLP),
    "HunyuanVideo15": FamilyTargets("HunyuanVideo 1.5", _HUNYUAN_ATTENTION, _HUNYUAN_MLP),
    "CogVideoX_T2V": FamilyTargets("CogVideoX", attention=r"blocks\.\d+\.(q|k|v|attn_out)",
                                   mlp=r"blocks\.\d+\.(ff_proj|ff_out)"),
    "LTXV": FamilyTargets("LTX-Video", attention=r"transformer_blocks\.\d+\.attn(1|2)\.(to_q|to_k|to_v|to_out\.0)",
                          mlp=r"transformer_blocks\.\d+\.ff\.net\.(0\.proj|2)"),
}


@dataclass(frozen=True)
class AdapterTargets:
    """The chosen weights (``diffusion_model.<path>.weight`` -> 2-D shape) and what they are."""
    family: str
    layers: str
    shapes: dict[str, tuple[int, int]]
    attention: int
    mlp: int

    def describe(self) -> str:
        """One line for the run summary."""
        kinds = f"{self.attention} attention" + (f", {self.mlp} MLP" if self.layers == "attention+mlp" else "")
        return f"adapted layers: {len(self.shapes)} ({kinds}) of {self.family} (layers = {self.layers})"


def supported() -> str:
    names = dict.fromkeys(t.name for t in FAMILIES.values())
    return ", ".join(names) + f" (ComfyUI model types {', '.join(FAMILIES)})"


def select_targets(model_type: str, weights: dict[str, tuple[int, ...]], layers: str) -> AdapterTargets:
    """The 2-D weights of ``weights`` (state-dict key -> shape, keys ``diffusion_model.<path>.weight``) that
    ``layers`` adapts in a model of ComfyUI type ``model_type``. ValueError for an unknown family or layers
    setting, and when nothing (or no attention) matches."""
    if layers not in LAYER_CHOICES:
        raise ValueError(f"layers: got {layers!r}, expected one of {LAYER_CHOICES}")
    family = FAMILIES.get(model_type)
    if family is None:
        raise ValueError(f"model: got a {model_type} model; the identity adapter trains on the text-to-video "
                         f"families {supported()}. Connect one of those models (for Wan 2.2 A14B the low-noise "
                         "expert)")
    patterns = {"attention": re.compile(family.attention), "mlp": re.compile(family.mlp)}
    kinds = ("attention", "mlp") if layers == "attention+mlp" else ("attention",)
    shapes, counts = {}, dict.fromkeys(kinds, 0)
    for key, shape in weights.items():
        if not key.startswith("diffusion_model.") or not key.endswith(".weight") or len(shape) != 2:
            continue
        path = key[len("diffusion_model."): -len(".weight")]
        for kind in kinds:
            if patterns[kind].fullmatch(path):
                shapes[key] = tuple(shape)
                counts[kind] += 1
                break
    for kind in kinds:
        if counts[kind] == 0:
            raise ValueError(f"model: no {kind} layers found in this {family.name} model ({model_type}) by their "
                             f"native names (/{patterns[kind].pattern}/); its layout is not the one this pack "
                             "knows. Report the ComfyUI version and model file")
    return AdapterTargets(family.name, layers, shapes, counts["attention"], counts.get("mlp", 0))
