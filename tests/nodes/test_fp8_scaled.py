"""The apply node on fp8_scaled checkpoints (issue 20), in real ComfyUI on the CPU, both layouts ComfyUI reads
(dev/fp8_files.py: Comfy-Org's ``scaled_fp8`` files, the ones Wan 2.2 users have, and 0.33's ``comfy_quant``
format), with and without fp8 compute (ComfyUI's own switch: ``SUPPORT_FP8_OPS``, what ``--supports-fp8-compute``
sets; the CPU then runs the fp8 matmuls a card with fp8 compute runs).

The contract: the gate from step 0 computes exactly what core LoraLoaderModelOnly computes on the same file (core
merges the LoRA into the stored fp8 weight with stochastic rounding seeded by the weight's key: deterministic, so
bit for bit), the steps before the gate are the base model's, and a zero adapter is the base exactly."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from dev import tiny_models
from dev.fp8_files import write_quantized
from graphs import MODEL_FILES, base_graph, gated, install_models, ksampler, lora, pack_module, rel_err, run_latent

STEPS, GATE = 8, 6  # the apply node's default gate start 0.75: ceil(0.75 · 8)
IDENTITY, ZERO = "identity_wan21.safetensors", "zero_identity_wan21.safetensors"


@pytest.fixture(scope="module")
def rt(comfy):
    install_models(comfy)
    loras = comfy.model_dir("loras")
    if not (loras / ZERO).exists():
        save_file({k: torch.zeros_like(v) if "lora_up" in k else v
                   for k, v in load_file(str(loras / IDENTITY)).items()}, str(loras / ZERO))
    return comfy


def quantized_file(comfy, layout: str, per_channel: bool = False) -> str:
    """The tiny Wan written as ``layout`` into the diffusion_models folder (once); returns its name."""
    folder = comfy.model_dir("diffusion_models")
    name = f"tiny_wan21_{layout}{'_per_channel' if per_channel else ''}.safetensors"
    if not (folder / name).exists():
        write_quantized(folder / MODEL_FILES["wan21"], folder / name, layout, per_channel=per_channel)
    return name


@pytest.fixture(params=[False, True], ids=["no_fp8_compute", "fp8_compute"])
def fp8_compute(request, monkeypatch):
    if request.param:
        import comfy.model_management as mm

        monkeypatch.setattr(mm, "SUPPORT_FP8_OPS", True)
    return request.param


def sample(comfy, unet: str, build=lambda g, m: m) -> torch.Tensor:
    g, model, pos, neg, latent = base_graph("wan21", steps=STEPS)
    g.nodes[model[0]]["inputs"]["unet_name"] = unet
    return run_latent(comfy, g, ksampler(g, build(g, model), pos, neg, latent, steps=STEPS))


def layer_kind(comfy, unet: str) -> str:
    """The ops class and weight type UNETLoader gives an attention layer of ``unet`` (what the test ran on)."""
    import nodes

    q = nodes.UNETLoader().load_unet(unet, "default")[0].model.diffusion_model.blocks[0].self_attn.q
    return f"{type(q).__qualname__}[{type(q.weight).__name__} {q.weight.dtype}]"


@pytest.mark.parametrize("layout", ["scaled_fp8", "comfy_quant"])
def test_gate_on_fp8_scaled_computes_as_core_lora(rt, layout, fp8_compute):
    unet = quantized_file(rt, layout)
    kind = layer_kind(rt, unet)
    assert "float8" in kind or "Quantized" in kind, kind  # the file loaded as quantized layers
    out = {"base": sample(rt, unet),
           "zero": sample(rt, unet, lambda g, m: gated(g, m, ZERO, start=0.0)),
           "core": sample(rt, unet, lambda g, m: lora(g, m, IDENTITY)),
           "gated_from_0": sample(rt, unet, lambda g, m: gated(g, m, IDENTITY, start=0.0))}
    assert torch.isfinite(out["base"]).all()
    assert rel_err(out["core"], out["base"]) > 1e-2, "the LoRA must matter for the check to mean anything"
    assert torch.equal(out["zero"], out["base"]), (kind, rel_err(out["zero"], out["base"]))
    assert torch.equal(out["gated_from_0"], out["core"]), (kind, rel_err(out["gated_from_0"], out["core"]))


def test_steps_before_the_gate_are_the_base_models_on_fp8_scaled(rt, monkeypatch):
    """Wan 2.2 users' case (scaled_fp8 file, fp8 compute), default gate 0.75: every step before the gate is the base
    model's bit for bit, and the adapter acts from the gate's step on (how gated calls compute: the test above).
    Not compared with two KSamplerAdvanced: their hand-over differs from one sampler by float rounding, which the
    fp8 matmul's input quantisation on 0.33 amplifies to ~2e-3 (one sampler with the gate from step 0 and core's
    LoRA give the same result bit for bit, as do the two from the same latent at the gate)."""
    import comfy.model_management as mm
    import comfy.sample
    import nodes

    monkeypatch.setattr(mm, "SUPPORT_FP8_OPS", True)
    unet = quantized_file(rt, "scaled_fp8")
    adapter = nodes.NODE_CLASS_MAPPINGS["PersonalVideoLoadIdentityAdapter"].execute(IDENTITY).args[0]
    apply_node = nodes.NODE_CLASS_MAPPINGS["PersonalVideoApplyIdentityAdapter"]
    encode = nodes.NODE_CLASS_MAPPINGS["PersonalVideoDevTextEncodeStandIn"]()
    pos, neg = (encode.encode(text, 4096, 0, 16)[0] for text in ("a person walking on a beach", "blurry"))
    runs = {}
    for name in ("base", "gated"):
        model = nodes.UNETLoader().load_unet(unet, "default")[0]
        if name == "gated":
            model = apply_node.execute(model, adapter, 1.0, 0.75, "steps", override_gate_start=True).args[0]
        steps = runs[name] = []
        noise = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(11))
        comfy.sample.sample(model, noise, STEPS, 3.0, "euler", "simple", pos, neg, torch.zeros(noise.shape),
                            callback=lambda i, x0, x, total: steps.append((x.clone(), x0.clone())),
                            disable_pbar=True, seed=11)
    for i in range(GATE):  # the sampler's input and the model's denoised output at every step before the gate
        assert torch.equal(runs["gated"][i][0], runs["base"][i][0]) and torch.equal(runs["gated"][i][1],
                                                                                    runs["base"][i][1]), i
    assert torch.equal(runs["gated"][GATE][0], runs["base"][GATE][0])  # the input of the first gated step
    assert rel_err(runs["gated"][GATE][1], runs["base"][GATE][1]) > 1e-2  # the adapter acts from there on


def test_gated_calls_merge_per_layer_and_restore_the_layer(rt, monkeypatch):
    """Each gated call merges each adapted fp8 layer's weight at that layer's forward, and sampling leaves every
    layer as it was: the same weight object, the same instance attributes (functions, no forward of its own)."""
    import comfy.model_management as mm
    import comfy.sample
    import nodes

    monkeypatch.setattr(mm, "SUPPORT_FP8_OPS", True)
    model = nodes.UNETLoader().load_unet(quantized_file(rt, "scaled_fp8"), "default")[0]
    adapter = nodes.NODE_CLASS_MAPPINGS["PersonalVideoLoadIdentityAdapter"].execute(IDENTITY).args[0]
    apply_node = nodes.NODE_CLASS_MAPPINGS["PersonalVideoApplyIdentityAdapter"]
    gated_model = apply_node.execute(model, adapter, 1.0, 0.75, "steps", override_gate_start=True).args[0]
    layers = {n: m for n, m in model.model.diffusion_model.named_modules() if hasattr(m, "weight_function")}

    def state(m):
        return m.weight, {k: v for k, v in m.__dict__.items() if k in ("weight_function", "bias_function", "forward")}

    mm.load_models_gpu([gated_model])  # a load sets each layer's function lists itself (wipe_lowvram_weight)
    before = {n: state(m) for n, m in layers.items()}
    fp8 = pack_module("nodes.runtime.fp8_matmul")
    merged_at, merge = [], fp8.merge_as_core

    def recording(module, param, key, patches, device):
        merged_at.append(key)
        return merge(module, param, key, patches, device)

    monkeypatch.setattr(fp8, "merge_as_core", recording)
    encode = nodes.NODE_CLASS_MAPPINGS["PersonalVideoDevTextEncodeStandIn"]()
    pos, neg = (encode.encode(text, 4096, 0, 16)[0] for text in ("a person", "blurry"))
    latent = torch.zeros(1, 16, 3, 8, 8)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(1))
    comfy.sample.sample(gated_model, noise, STEPS, 3.0, "euler", "simple", pos, neg, latent, disable_pbar=True, seed=1)
    adapted = sorted(f"{name}.weight" for name in tiny_models.lora_targets("wan21"))  # the random LoRA's targets
    # one model call per step (cond and uncond batched): every adapted weight merged once in each gated call
    assert sorted(merged_at) == sorted(adapted * (STEPS - GATE)), (len(merged_at), len(adapted))
    after = {n: state(m) for n, m in layers.items()}
    changed = [n for n in layers if not (after[n][0] is before[n][0] and after[n][1] == before[n][1])]
    assert not changed, [(n, before[n][1], after[n][1], after[n][0] is before[n][0]) for n in changed[:3]]
