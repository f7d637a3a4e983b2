"""Shared by the routing tests: test adapters, sampling with a spy on the routed layers, node shortcuts."""

from __future__ import annotations

import re

import torch

from dev import tiny_models
from graphs import install_models, pack_module

FAMILIES = ["wan21", "hunyuan_video"]
# The layers the pack's trainer adapts (attention+mlp): image, text and (HunyuanVideo) joint-stream layers.
PACK_LAYERS = re.compile(r"(self_attn|cross_attn)\.(q|k|v|o)$|ffn\.(0|2)$|(img|txt)_(attn\.(qkv|proj)|mlp\.(0|2))$"
                         r"|single_blocks\.\d+\.linear(1|2)$")
IMAGE_LAYERS = re.compile(r"self_attn\.(q|k|v|o)$|cross_attn\.(q|o)$|ffn\.(0|2)$|img_(attn\.(qkv|proj)|mlp\.(0|2))$")


def lora_name(family: str, kind: str) -> str:
    return f"routed_{kind}_{family}.safetensors"


def install_routing_loras(comfy) -> None:
    """Per family: 'full' (every layer the pack trains), 'image' (its image-token layers only) and 'other' (a second
    person: image-token layers, another seed)."""
    install_models(comfy)
    for family in FAMILIES:
        targets = tiny_models.lora_targets(family)
        kinds = {"full": ([t for t in targets if PACK_LAYERS.search(t)], 1),
                 "image": ([t for t in targets if IMAGE_LAYERS.search(t)], 1),
                 "other": ([t for t in targets if IMAGE_LAYERS.search(t)], 3)}
        for kind, (chosen, seed) in kinds.items():
            path = comfy.model_dir("loras") / lora_name(family, kind)
            if not path.exists():
                tiny_models.write_random_lora(family, path, seed=seed, std=0.15, targets=chosen)


def node(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[name]


def adapter(family: str, kind: str) -> dict:
    return node("PersonalVideoLoadIdentityAdapter").execute(lora_name(family, kind)).args[0]


def identities(*people) -> list:
    """Routed Identity chain from (adapter, mask[, reference]) tuples."""
    chain = None
    for person in people:
        adapter_sd, mask, reference = (list(person) + [None])[:3]
        chain = node("PersonalVideoRoutedIdentity").execute(adapter_sd, 1.0, reference, mask, chain).args[0]
    return chain


def routed(people, regions="given masks", start=0.75, **kwargs):
    def apply(model):
        args = dict(regions=regions, assign_by="left to right", region_scale=1.8,
                    face_count_mismatch="route the faces found", gate_start=start, gate_mode="steps",
                    override_gate_start=True) | kwargs
        return node("PersonalVideoApplyRoutedIdentityAdapters").execute(model, identities(*people), **args).args[0]
    return apply


def gated(adapter_sd, start=0.75):
    return lambda model: node("PersonalVideoApplyIdentityAdapter").execute(model, adapter_sd, 1.0, start, "steps",
                                                                           override_gate_start=True).args[0]


def conditioning(family: str, prompt: str = "two people talking on a beach"):
    enc = node("PersonalVideoDevTextEncodeStandIn")()
    w, p = tiny_models.CONTEXT_WIDTH[family], tiny_models.POOLED_WIDTH[family]
    return enc.encode(prompt, w, p, 16)[0], enc.encode("blurry", w, p, 16)[0]


def sample(family, model_fn, steps=8, cfg=3.0, size=(8, 8), callback=None, **kwargs):
    """comfy.sample.sample on the tiny model of ``family`` through ``model_fn``; the final latent."""
    import comfy.sample
    import nodes

    model = model_fn(nodes.UNETLoader().load_unet(f"tiny_{family}.safetensors", "default")[0])
    pos, neg = conditioning(family)
    shape = (1, 16, 3, *size)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(11))
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", pos, neg, torch.zeros(shape),
                               callback=callback, disable_pbar=True, seed=11, **kwargs)


class RouteSpy:
    """Records every routed layer call (path, the layer's own output, the output with the routed adapters), calling
    the real routing function (not a mock)."""

    def __init__(self, monkeypatch):
        self.module = pack_module("nodes.runtime.routing")
        self.calls: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        real = self.module._route

        def spy(layer, call, module, inputs, output):
            before = output.detach().clone()  # routing adds in place
            result = real(layer, call, module, inputs, output)
            self.calls.append((layer.path, before, result.detach().clone()))
            return result

        monkeypatch.setattr(self.module, "_route", spy)

    def first(self, path: str, routed: bool = True) -> torch.Tensor:
        """The output of ``path`` in the first gated model call (``routed`` False: the layer's own output)."""
        return next(after if routed else before for p, before, after in self.calls if p == path)

