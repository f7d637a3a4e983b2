"""Which tokens each adapted layer of a video transformer acts on, by the family's native module names.

Routing multiplies a layer's LoRA output by a weight per *image* token (the latent's patches, in the model's
(frame, row, column) order). So every adapted layer must be one of:

- ``image``: its input is the image tokens and nothing else (Wan's self-attention, cross-attention query and output,
  feed-forward; HunyuanVideo's ``img_attn`` / ``img_mlp``);
- ``text``: its input is the text tokens (Wan's cross-attention key and value, which read the prompt; HunyuanVideo's
  ``txt_attn`` / ``txt_mlp`` and the text token refiner): routing gives these no adapter at all, since a text token
  belongs to no region and is read by every image token;
- ``joint``: its input is image and text tokens together (HunyuanVideo's single-stream ``linear1`` / ``linear2``):
  the image tokens are routed, the text tokens get nothing.

Layers of any other kind (modulation, embedders, heads) act on a whole-video vector, not per token: an adapter on
them cannot be confined to a region, so it is refused by name rather than applied everywhere or dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

IMAGE, TEXT, JOINT = "image", "text", "joint"


@dataclass(frozen=True)
class TokenLayout:
    name: str
    image: str  # regexes on the module path inside the diffusion model
    text: str
    joint: str | None = None


_WAN = TokenLayout("Wan 2.1 / 2.2 text-to-video",
                   image=r"blocks\.\d+\.(self_attn\.(q|k|v|o)|cross_attn\.(q|o)|ffn\.(0|2))",
                   text=r"blocks\.\d+\.cross_attn\.(k|v)")
_HUNYUAN = TokenLayout("HunyuanVideo", image=r"double_blocks\.\d+\.img_(attn\.(qkv|proj)|mlp\.(0|2))",
                       text=r"double_blocks\.\d+\.txt_(attn\.(qkv|proj)|mlp\.(0|2))"
                            r"|txt_in\.individual_token_refiner\..+",
                       joint=r"single_blocks\.\d+\.linear(1|2)")

# ComfyUI model config class -> layout. Wan 2.2 A14B experts load as WAN21_T2V, 5B as WAN22_T2V. Families whose
# token order the routing has not been checked on (HunyuanVideo 1.5, LTX-Video, CogVideoX, image-to-video) are not
# listed and are refused by name.
LAYOUTS = {"WAN21_T2V": _WAN, "WAN22_T2V": _WAN, "HunyuanVideo": _HUNYUAN}


def supported() -> str:
    return ", ".join(dict.fromkeys(layout.name for layout in LAYOUTS.values())) + \
        f" (ComfyUI model types {', '.join(LAYOUTS)})"


def classify_layers(model_type: str, paths: list[str]) -> dict[str, str]:
    """{module path: IMAGE | TEXT | JOINT} for the adapted ``paths`` of a ``model_type`` model.

    ValueError for an unsupported family, or naming the paths that act on no token stream."""
    layout = LAYOUTS.get(model_type)
    if layout is None:
        raise ValueError(f"model: got a {model_type} model; region-routed adapters work on {supported()}. Use the "
                         "gated apply node (one identity) with other families")
    kinds = [(IMAGE, layout.image), (TEXT, layout.text)] + ([(JOINT, layout.joint)] if layout.joint else [])
    out, other = {}, []
    for path in paths:
        kind = next((k for k, pattern in kinds if re.fullmatch(pattern, path)), None)
        if kind is None:
            other.append(path)
        else:
            out[path] = kind
    if other:
        raise ValueError(f"adapter: {len(other)} of its layers act on the whole video, not on tokens, so they cannot "
                         f"be confined to a face ({', '.join(sorted(other)[:6])}{', ...' if len(other) > 6 else ''}). "
                         f"Routing adapts only the {layout.name} transformer blocks' token layers; train the adapter "
                         "with this pack (it adapts only those) or remove those keys from the file")
    return out
