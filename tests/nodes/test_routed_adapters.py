"""Region-routed identity adapters in real ComfyUI on the tiny Wan 2.1 and HunyuanVideo models, given masks.

Text conditioning comes from the dev stand-in (no tiny real text encoder exists); models, loaders, samplers, masks
are ComfyUI's own. Measured (both ComfyUI versions): an all-ones routed adapter differs from the gated apply node by
1.5e-7 (Wan) and 1.3e-7 (HunyuanVideo) relative on the final latent: float rounding of ``W x + s up (down x)``
against ``(W + s up down) x``.
"""

from __future__ import annotations

import pytest
import torch

from graphs import base_graph, ksampler, rel_err, run_latent
from routing_helpers import (FAMILIES, IMAGE_LAYERS, RouteSpy, adapter, gated, install_routing_loras, lora_name,
                             routed, sample)

FIRST_LAYER = {"wan21": "blocks.0.self_attn.q", "hunyuan_video": "double_blocks.0.img_attn.qkv"}
ONES, ZEROS = torch.ones(1, 64, 64), torch.zeros(1, 64, 64)


@pytest.fixture(scope="module", autouse=True)
def loras(comfy):
    install_routing_loras(comfy)


def routed_graph(family: str, masks: list, kinds: list[str]):
    """Load Identity Adapter -> Routed Identity (mask from core SolidMask) -> Apply (Routed) -> KSampler."""
    g, model, pos, neg, latent = base_graph(family)
    chain = None
    for kind, value in zip(kinds, masks):
        mask = g.add("SolidMask", value=value, width=64, height=64)
        loaded = g.add("PersonalVideoLoadIdentityAdapter", lora_name=lora_name(family, kind))
        chain = g.add("PersonalVideoRoutedIdentity", adapter=loaded, strength=1.0, mask=mask,
                      **({"identities": chain} if chain else {}))
    model = g.add("PersonalVideoApplyRoutedIdentityAdapters", model=model, identities=chain, regions="given masks",
                  assign_by="left to right", region_scale=1.8, face_count_mismatch="route the faces found",
                  gate_start=0.75, gate_mode="steps", override_gate_start=True)
    return g, ksampler(g, model, pos, neg, latent)


@pytest.mark.parametrize("family", FAMILIES)
def test_all_ones_equals_the_gated_apply_node_and_all_zeros_the_base_exactly(comfy, family):
    g, out = routed_graph(family, [1.0], ["image"])
    ones = run_latent(comfy, g, out)
    g, model, pos, neg, latent = base_graph(family)
    loaded = g.add("PersonalVideoLoadIdentityAdapter", lora_name=lora_name(family, "image"))
    reference = run_latent(comfy, g, ksampler(g, g.add("PersonalVideoApplyIdentityAdapter", model=model,
                                                        adapter=loaded, strength=1.0, gate_start=0.75,
                                                        gate_mode="steps", override_gate_start=True), pos, neg,
                                              latent))
    g, zeros_out = routed_graph(family, [0.0], ["full"])
    zeros = run_latent(comfy, g, zeros_out)
    g, model, pos, neg, latent = base_graph(family)
    base = run_latent(comfy, g, ksampler(g, model, pos, neg, latent))
    assert rel_err(ones, reference) <= 1e-5  # float rounding (see the module docstring for the measured value)
    assert rel_err(reference, base) > 1e-3
    assert torch.equal(zeros, base)


@pytest.mark.parametrize("family", FAMILIES)
def test_text_tokens_get_no_adapter(comfy, family, monkeypatch):
    full = adapter(family, "full")
    text_free = {k: v for k, v in full.items() if IMAGE_LAYERS.search(k.rsplit(".", 2)[0])}
    spy = RouteSpy(monkeypatch)
    ones = sample(family, routed([(full, ONES)]))
    if family == "wan21":  # cross-attention k/v read the prompt: routing leaves them out, the rest acts everywhere
        assert rel_err(ones, sample(family, gated(text_free))) <= 1e-5
        assert rel_err(ones, sample(family, gated(full))) > 1e-3
        assert not any("cross_attn.k" in p or "cross_attn.v" in p for p, _, _ in spy.calls)
        return
    # HunyuanVideo: txt_attn / txt_mlp are never hooked; single-stream layers route only their image tokens
    assert spy.calls and not any("txt_" in p for p, _, _ in spy.calls)
    routed_rows = spy.first("single_blocks.0.linear1")[0]
    own_rows = spy.first("single_blocks.0.linear1", routed=False)[0]
    same = (routed_rows == own_rows).all(-1)
    text = 16  # the stand-in's prompt tokens; image tokens: 3 frames x 4 x 4 patches
    assert routed_rows.shape[0] == text + 48 and int(same.sum()) == text
    import inspect

    import comfy.ldm.hunyuan_video.model as hunyuan

    text_first = "torch.cat((txt, img), 1)" in inspect.getsource(hunyuan.HunyuanVideo.forward_orig)  # 0.33; 0.3.75
    # puts the image first: the untouched rows must be exactly the text tokens, wherever this version puts them
    assert bool(same[:text].all()) if text_first else bool(same[-text:].all())


@pytest.mark.parametrize("family", FAMILIES)
def test_disjoint_masks_change_only_their_own_tokens_at_the_first_gated_layer(comfy, family, monkeypatch):
    left, right = torch.zeros(1, 64, 64), torch.zeros(1, 64, 64)
    left[..., :16] = 1.0  # latent columns 0-1: token column 0
    right[..., 48:] = 1.0  # token column 3
    spy = RouteSpy(monkeypatch)
    first = FIRST_LAYER[family]
    outputs = {}
    for name, people in {"both": [(adapter(family, "image"), left), (adapter(family, "other"), right)],
                         "a": [(adapter(family, "image"), ONES)], "b": [(adapter(family, "other"), ONES)],
                         "base": [(adapter(family, "image"), ZEROS)]}.items():
        spy.calls.clear()
        sample(family, routed(people))
        outputs[name] = spy.first(first).reshape(2, 3, 4, 4, -1)  # cond/uncond, frames, rows, columns, features
    both, a, b, base = outputs["both"], outputs["a"], outputs["b"], outputs["base"]
    assert torch.equal(both[..., 0, :], a[..., 0, :])
    assert torch.equal(both[..., 3, :], b[..., 3, :])
    assert torch.equal(both[..., 1:3, :], base[..., 1:3, :])
    assert not torch.equal(a[..., 0, :], base[..., 0, :]) and not torch.equal(b[..., 3, :], base[..., 3, :])


def test_masks_are_resized_as_core_resizes_conditioning_masks(comfy):
    import comfy.samplers

    from graphs import pack_module

    given = pack_module("nodes.runtime.routing_regions").GivenRegions
    pool = pack_module("training.routing.regions").pool_to_tokens
    blob = torch.zeros(1, 48, 80)
    blob[:, 10:30, 20:70] = 1.0
    x = torch.zeros(2, 16, 3, 6, 10)
    ours = given([blob], ["identity 1"], 4).token_masks(None, x, None, (1, 2, 2), None)
    conds = [{"mask": blob.clone()}]
    comfy.samplers.resolve_areas_and_cond_masks_multidim(conds, x.shape[2:], "cpu")
    core = conds[0]["mask"][0]  # what core's regional conditioning samples with: [batch 1, T 1 (all frames), 6, 10]
    assert core.shape == (1, 6, 10)
    assert torch.equal(ours[0, 0], pool(core.expand(3, -1, -1), (1, 2, 2)))
    frames = torch.zeros(9, 48, 80)
    frames[5:] = blob  # the person appears from frame 5 on: latent frame 2 only
    per_frame = given([frames], ["identity 1"], 4).token_masks(None, x, None, (1, 2, 2), None)[0, 0]
    assert per_frame[:2].sum() == 0 and torch.equal(per_frame[2], ours[0, 0, 2])


@pytest.mark.parametrize("family", FAMILIES)
def test_steps_before_the_gate_and_the_input_model_are_untouched(comfy, family):
    import nodes

    seen = {"base": [], "routed": []}
    for name, fn in (("base", lambda m: m), ("routed", routed([(adapter(family, "full"), ONES)]))):
        sample(family, fn, callback=lambda step, x0, x, total, name=name: seen[name].append((x0.clone(), x.clone())))
    for i in range(6):  # gate at step ceil(0.75 * 8) = 6
        assert all(torch.equal(p, q) for p, q in zip(seen["base"][i], seen["routed"][i])), f"step {i}"
    assert not torch.equal(seen["base"][6][0], seen["routed"][6][0])
    base = nodes.UNETLoader().load_unet(f"tiny_{family}.safetensors", "default")[0]
    patched = routed([(adapter(family, "full"), ONES)])(base)
    assert patched.wrappers.get("apply_model") and not base.wrappers.get("apply_model")
    assert not [m for m in base.model.modules() if m._forward_hooks or m._forward_pre_hooks]


def test_bad_inputs_are_refused_with_the_fix(comfy):
    import nodes

    model = nodes.UNETLoader().load_unet("tiny_wan21.safetensors", "default")[0]
    with pytest.raises(ValueError, match=r"given masks: identity 1 \(.*\) has no mask"):
        routed([(adapter("wan21", "full"), None)])(model)
    with pytest.raises(ValueError, match="connect vae and identity_reward"):
        routed([(adapter("wan21", "full"), None)], regions="automatic (faces at the gate)")(model)
    with pytest.raises(ValueError, match="closest reference: identity 1 .* has no reference"):
        routed([(adapter("wan21", "full"), None)], regions="automatic (faces at the gate)",
               assign_by="closest reference", vae=object(), identity_reward=object())(model)
    wrong = adapter("hunyuan_video", "full")
    with pytest.raises(ValueError, match="none of its .* keys match"):
        routed([(wrong, ONES)])(model)
