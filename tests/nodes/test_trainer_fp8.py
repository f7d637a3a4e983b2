"""fp8 base weights in training and in the apply node, in real ComfyUI on the CPU (issue 11): UNETLoader's fp8
weight dtypes, ComfyUI's fp8-compute path (its own --supports-fp8-compute switch) and a scaled-fp8 model file.
Same tiny models and stand-ins as test_trainer_comfy.py (its ``rt`` fixture and ``train_graph``)."""

from __future__ import annotations

import pytest
import torch
from graphs import pack_module
from test_trainer_comfy import rt, train_graph  # noqa: F401 (rt is a fixture)


@pytest.fixture
def fp8_compute(monkeypatch):
    """What ComfyUI does on a card with fp8 compute (Ada/Hopper), here via its own switch
    (``--supports-fp8-compute`` sets ``SUPPORT_FP8_OPS``): UNETLoader's fp8_e4m3fn_fast then builds ``fp8_ops``
    layers, which multiply fp8 inputs by fp8 weights (torch runs that on the CPU too), the path without gradient."""
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "SUPPORT_FP8_OPS", True)


@pytest.mark.parametrize("weight_dtype", ["fp8_e4m3fn", "fp8_e4m3fn_fast"])
def test_fp8_weights_fresh_adapter_equals_source_and_the_adapter_trains(rt, fp8_compute, monkeypatch,  # noqa: F811
                                                                        weight_dtype):
    trainer = pack_module("training.loop.trainer").Trainer
    generate, rollouts, layer_types = trainer.generate, [], set()

    def recording(self, *args):
        rollout = generate(self, *args)
        rollouts.append((rollout.source.detach().clone(), rollout.tuned.detach().clone()))
        q = self.backend.patcher.model.diffusion_model.blocks[0].self_attn.q
        layer_types.add((type(q).__qualname__, q.weight.dtype))
        return rollout

    monkeypatch.setattr(trainer, "generate", recording)
    g, tr, model, *_ = train_graph("wan21", steps=2, run_name=f"fp8_{weight_dtype}")
    g.nodes[model[0]]["inputs"]["weight_dtype"] = weight_dtype
    g.capture([tr[0], 2], "summary")
    g.capture(tr, "adapter")
    rt.run(g.nodes)
    assert layer_types == {("fp8_ops.Linear" if weight_dtype.endswith("fast") else "manual_cast.Linear",
                            torch.float8_e4m3fn)}, layer_types
    source, adapter = rollouts[0]
    assert torch.isfinite(source).all() and torch.equal(source, adapter), \
        "step 0: a fresh adapter (up = 0) must give the source branch's video exactly"
    assert "2 steps (2 updated the adapter" in rt.captured()["summary"], rt.captured()["summary"]
    assert any(float(v.abs().sum()) > 0 for k, v in rt.captured()["adapter"].items() if "lora_up" in k)


@pytest.mark.parametrize("weight_dtype", ["fp8_e4m3fn", "fp8_e4m3fn_fast"])
def test_fp8_weights_apply_node_with_a_zero_adapter_equals_the_base(rt, fp8_compute, weight_dtype):  # noqa: F811
    from graphs import base_graph, gated, ksampler, run_latent
    from safetensors.torch import load_file, save_file

    loras = rt.model_dir("loras")
    zero = {k: torch.zeros_like(v) if "lora_up" in k else v
            for k, v in load_file(str(loras / "identity_wan21.safetensors")).items()}
    save_file(zero, str(loras / "zero_wan21.safetensors"))
    out = {}
    for name in ("base", "zero", "identity"):
        g, model, pos, neg, latent = base_graph("wan21")
        g.nodes[model[0]]["inputs"]["weight_dtype"] = weight_dtype
        m = model if name == "base" else gated(g, model, f"{name}_wan21.safetensors")
        out[name] = run_latent(rt, g, ksampler(g, m, pos, neg, latent))
    assert torch.isfinite(out["base"]).all() and torch.equal(out["zero"], out["base"])
    assert not torch.equal(out["identity"], out["base"]), "a non-zero adapter must act after the gate"


def test_fp8_fast_gated_adapter_computes_as_core_lora_loading(rt, fp8_compute, monkeypatch):  # noqa: F811
    """fp8_e4m3fn_fast: core LoraLoaderModelOnly bakes W + ΔW back into fp8 (stochastic rounding seeded by the key)
    and keeps the fp8 matmul. The gate open from step 0 must give exactly that, through the fp8 matmul in every
    call, as many as the base run makes (ComfyUI 0.33 leaves it for layers carrying a weight function: the gate
    merges instead, nodes/runtime/fp8_matmul.py)."""
    import comfy.ops
    from graphs import base_graph, gated, ksampler, lora, rel_err, run_latent

    fp8_linear, fp8_calls = comfy.ops.fp8_linear, []

    def counting(module, input):
        fp8_calls.append(len(module.weight_function))
        return fp8_linear(module, input)

    monkeypatch.setattr(comfy.ops, "fp8_linear", counting)
    out = {}
    for name, build in (("core", lambda g, m: lora(g, m, "identity_wan21.safetensors")),
                        ("gated", lambda g, m: gated(g, m, "identity_wan21.safetensors", start=0.0)),
                        ("base", lambda g, m: m)):
        g, model, pos, neg, latent = base_graph("wan21")
        g.nodes[model[0]]["inputs"]["weight_dtype"] = "fp8_e4m3fn_fast"
        fp8_calls.clear()
        out[name] = run_latent(rt, g, ksampler(g, build(g, model), pos, neg, latent))
        if name == "gated":
            gated_calls = list(fp8_calls)
    assert rel_err(out["core"], out["base"]) > 1e-2, "the LoRA must matter for the check to mean anything"
    assert torch.equal(out["gated"], out["core"]), rel_err(out["gated"], out["core"])
    assert len(gated_calls) == len(fp8_calls) > 0, (len(gated_calls), len(fp8_calls))  # fp8_calls: the base run's


def _write_scaled_fp8(rt, layout="scaled_fp8"):  # noqa: F811
    """The tiny Wan as ComfyUI's fp8_scaled files are laid out (dev/fp8_files.py; ``scaled_fp8``: Comfy-Org's Wan 2.2
    fp8 releases), and the same weights dequantised (W = fp8 · s, exact in fp32): the exact reference for what the
    scaled model computes."""
    from dev.fp8_files import write_quantized
    from graphs import MODEL_FILES

    folder = rt.model_dir("diffusion_models")
    scaled = folder / f"tiny_wan21_{layout}.safetensors"
    dequantised = scaled.with_name(scaled.stem + "_dequantised.safetensors")
    if not dequantised.exists():
        write_quantized(folder / MODEL_FILES["wan21"], scaled, layout)
    return scaled.name, dequantised.name


def test_scaled_fp8_apply_node_adds_the_lora_at_full_size(rt):  # noqa: F811
    """Scaled-fp8 layers multiply their stored weight by scale_weight after the weight functions: the gate's
    delta must be divided by it first, or the adapter acts at scale_weight (~1e-4) of its size. With the gate
    open from step 0, the scaled model + apply node must change the result as core LoraLoader changes the
    scaled model (exactly: the gate merges as core does, nodes/runtime/fp8_matmul.py) and, up to what storing the
    merged weight in fp8 costs, as core LoraLoader changes the dequantised model."""
    from graphs import base_graph, gated, ksampler, lora, rel_err, run_latent

    scaled, dequantised = _write_scaled_fp8(rt)
    out = {}
    for name, unet, build in (("gated", scaled, lambda g, m: gated(g, m, "identity_wan21.safetensors", start=0.0)),
                              ("reference", dequantised, lambda g, m: lora(g, m, "identity_wan21.safetensors")),
                              ("base", dequantised, lambda g, m: m), ("scaled_base", scaled, lambda g, m: m),
                              ("core_scaled", scaled, lambda g, m: lora(g, m, "identity_wan21.safetensors"))):
        g, model, pos, neg, latent = base_graph("wan21")
        g.nodes[model[0]]["inputs"]["unet_name"] = unet
        out[name] = run_latent(rt, g, ksampler(g, build(g, model), pos, neg, latent))
    assert rel_err(out["reference"], out["base"]) > 1e-2, "the LoRA must matter for the check to mean anything"
    # The scaled model computes the base slightly differently (x·s times W/s: 1.4e-3 relative here), so the
    # adapter's effect is compared: scaled + apply node minus scaled base vs core LoRA minus base, in fp32.
    assert torch.equal(out["gated"], out["core_scaled"]), rel_err(out["gated"], out["core_scaled"])
    effect, reference_effect = out["gated"] - out["scaled_base"], out["reference"] - out["base"]
    # Core (and so the gate) stores W + ΔW back in fp8, which costs this much of the LoRA's effect here: 0.064 on
    # 0.33 (re-quantised with a recalculated scale: e4m3 rounding alone), 0.344 on 0.3.75 (divided by the file's
    # scale_weight, so the values the LoRA pushes past the layer's old absmax clamp at fp8's 448). A delta not
    # divided by scale_weight would act at ~1e-4 of its size: a relative error of ~1.0 and a norm ratio of ~1e-4.
    assert rel_err(effect, reference_effect) < 0.5, rel_err(effect, reference_effect)
    assert 0.5 < float(effect.norm() / reference_effect.norm()) < 2.0, float(effect.norm() / reference_effect.norm())


@pytest.mark.parametrize("layout", ["scaled_fp8", "comfy_quant"])
def test_scaled_fp8_with_fp8_compute_trains_from_an_exact_start(rt, fp8_compute, monkeypatch, layout):  # noqa: F811
    """Scaled fp8 on a card with fp8 compute runs fp8 matmuls (no gradient) whatever the layer's mode; the training
    run must still give a fresh adapter equal to the source branch and a gradient that updates the adapter."""
    scaled, _ = _write_scaled_fp8(rt, layout)
    trainer = pack_module("training.loop.trainer").Trainer
    generate, rollouts = trainer.generate, []

    def recording(self, *args):
        rollout = generate(self, *args)
        rollouts.append((rollout.source.detach().clone(), rollout.tuned.detach().clone()))
        return rollout

    monkeypatch.setattr(trainer, "generate", recording)
    g, tr, model, *_ = train_graph("wan21", steps=2, run_name=f"fp8_{layout}")
    g.nodes[model[0]]["inputs"]["unet_name"] = scaled
    g.capture([tr[0], 2], "summary")
    rt.run(g.nodes)
    assert torch.equal(*rollouts[0]) and torch.isfinite(rollouts[0][0]).all()
    assert "2 steps (2 updated the adapter" in rt.captured()["summary"], rt.captured()["summary"]


def test_a_per_channel_fp8_scale_is_refused_naming_the_layer(rt):  # noqa: F811
    """The gate divides its delta by the layer's one fp8 scale; a per-channel scale [out, 1] cannot take that, so the
    apply node and the trainer refuse it, naming the layer. ComfyUI's own scaled-fp8 loading builds per-tensor scales
    only, so the test gives one layer of the loaded scaled-fp8 model a per-channel scale (as other loaders lay them
    out)."""
    import nodes
    from safetensors.torch import load_file

    scaled, _ = _write_scaled_fp8(rt)
    model = nodes.UNETLoader().load_unet(scaled, "default")[0]
    layer = model.model.diffusion_model.blocks[0].self_attn.q
    out_features = layer.weight.shape[0]
    layer.scale_weight = torch.nn.Parameter(torch.full((out_features, 1), 1e-3), requires_grad=False)
    refusal = (rf"identity adapter: layer diffusion_model.blocks.0.self_attn.q has a per-channel fp8 scale "
               rf"\({out_features}, 1\); only per-tensor scaled fp8 is supported. Load the model with weight_dtype "
               r"default \(a bf16/fp16 file\)")
    lora = load_file(str(rt.model_dir("loras") / "identity_wan21.safetensors"))
    with pytest.raises(ValueError, match=refusal):
        pack_module("nodes.runtime.gate").apply_gated_adapter(model, lora, 1.0, 0.75, source="test")
    shapes = {"diffusion_model.blocks.0.self_attn.q.weight": tuple(layer.weight.shape)}
    with pytest.raises(ValueError, match=refusal):
        pack_module("nodes.runtime.model").attach_trainable_adapter(model, shapes, 4, 4.0, 0, 0.75, "cpu")
