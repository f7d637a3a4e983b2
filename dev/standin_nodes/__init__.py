"""Stand-in nodes for the tests and the tiny demo. Not part of the pack: ComfyUI never loads this folder
unless the tests or the demo link it into custom_nodes.

- PersonalVideoDevTextEncodeStandIn: the video families' real text encoders (UMT5-XXL for Wan,
  llava-llama3 + CLIP-L for HunyuanVideo) are built from fixed multi-billion-parameter configs, so no
  tiny real one exists. This node turns a prompt into conditioning of the width a tiny model expects:
  one seeded random vector per word (same word, same vector), plus a pooled vector, and with
  ``attention_mask`` on the all-ones mask T5 encoders hand LTX-Video. It is a stand-in, not a text encoder.
- PersonalVideoDevCLIPStandIn: the same stand-in as a CLIP object (``tokenize`` /
  ``encode_from_tokens_scheduled``), for nodes that encode prompts themselves (the trainer).
- PersonalVideoDevCapture: an output node that keeps whatever reaches it in a dict, so a test can
  read the exact tensors a graph produced.
"""

import hashlib

import torch

CAPTURED = {}


def _word_vector(word: str, width: int) -> torch.Tensor:
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little") % (2**63)
    return torch.randn(width, generator=torch.Generator().manual_seed(seed))


class TextEncodeStandIn:
    CATEGORY = "PersonalVideo/dev"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text": ("STRING", {"multiline": True, "default": ""}),
            "width": ("INT", {"default": 4096, "min": 8, "max": 8192}),
            "pooled_width": ("INT", {"default": 0, "min": 0, "max": 8192}),
            "tokens": ("INT", {"default": 16, "min": 1, "max": 512}),
        }, "optional": {"attention_mask": ("BOOLEAN", {"default": False})}}

    def encode(self, text, width, pooled_width, tokens, attention_mask=False):
        words = text.lower().split()[:tokens]
        cond = torch.zeros(1, tokens, width)
        for i, w in enumerate(words):
            cond[0, i] = _word_vector(w, width)
        extra = {}
        if pooled_width:
            extra["pooled_output"] = (cond[0, : max(len(words), 1), :].mean(0, keepdim=True)[:, :pooled_width]
                                      if pooled_width <= width else torch.zeros(1, pooled_width))
        if attention_mask:  # LTX-Video's model requires one (its T5 encoder returns it)
            extra["attention_mask"] = torch.ones(1, tokens, dtype=torch.long)
        return ([[cond, extra]],)


class StandInCLIP:
    """Duck-types the two methods of comfy.sd.CLIP that CLIPTextEncode and the trainer call."""

    def __init__(self, width, pooled_width, tokens, attention_mask=False):
        self.width, self.pooled_width, self.tokens = width, pooled_width, tokens
        self.attention_mask = attention_mask

    def tokenize(self, text):
        return text

    def encode_from_tokens_scheduled(self, tokens):
        return TextEncodeStandIn().encode(tokens, self.width, self.pooled_width, self.tokens, self.attention_mask)[0]


class CLIPStandIn:
    CATEGORY = "PersonalVideo/dev"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "width": ("INT", {"default": 4096, "min": 8, "max": 8192}),
            "pooled_width": ("INT", {"default": 0, "min": 0, "max": 8192}),
            "tokens": ("INT", {"default": 16, "min": 1, "max": 512}),
        }, "optional": {"attention_mask": ("BOOLEAN", {"default": False})}}

    def load(self, width, pooled_width, tokens, attention_mask=False):
        return (StandInCLIP(width, pooled_width, tokens, attention_mask),)


class Capture:
    CATEGORY = "PersonalVideo/dev"
    RETURN_TYPES = ()
    FUNCTION = "capture"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",), "key": ("STRING", {"default": "out"})}}

    @classmethod
    def VALIDATE_INPUTS(cls, input_types):
        return True

    def capture(self, value, key):
        CAPTURED[key] = value
        return {}


NODE_CLASS_MAPPINGS = {
    "PersonalVideoDevTextEncodeStandIn": TextEncodeStandIn,
    "PersonalVideoDevCLIPStandIn": CLIPStandIn,
    "PersonalVideoDevCapture": Capture,
}
