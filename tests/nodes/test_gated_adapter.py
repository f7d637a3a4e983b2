"""The step-gated identity adapter, executed in real ComfyUI on tiny random Wan 2.1 and HunyuanVideo models.

Text conditioning comes from the dev stand-in node (no tiny real text encoder exists for these families;
see dev/standin_nodes). Everything else is ComfyUI's own: loaders, samplers, LoRA loaders, hooks.
"""

from __future__ import annotations

import math

import pytest
import torch

from graphs import base_graph, gated, install_models, ksampler, lora, rel_err, run_latent

FAMILIES = ["wan21", "hunyuan_video"]
STEPS = 8
GATE = math.ceil(0.75 * STEPS)  # 6


@pytest.fixture(scope="module", autouse=True)
def models(comfy):
    install_models(comfy)


def ident(family):
    return f"identity_{family}.safetensors"


def style(family):
    return f"style_{family}.safetensors"


def two_sampler_reference(comfy, family, early_model, late_model, cfg=3.0, seed=7):
    """The native way to run a LoRA only from step GATE on: two KSamplerAdvanced, LoRA on the second."""
    g, model, pos, neg, latent = base_graph(family)
    early = early_model(g, model)
    late = late_model(g, model)
    common = dict(positive=pos, negative=neg, noise_seed=seed, steps=STEPS, cfg=cfg, sampler_name="euler",
                  scheduler="simple")
    first = g.add("KSamplerAdvanced", model=early, latent_image=latent, add_noise="enable", start_at_step=0,
                  end_at_step=GATE, return_with_leftover_noise="enable", **common)
    second = g.add("KSamplerAdvanced", model=late, latent_image=first, add_noise="disable",
                   start_at_step=GATE, end_at_step=10000, return_with_leftover_noise="disable", **common)
    return run_latent(comfy, g, second)


@pytest.mark.parametrize("family", FAMILIES)
def test_final_latent_equals_two_sampler_reference(comfy, family):
    g, model, pos, neg, latent = base_graph(family)
    out = run_latent(comfy, g, ksampler(g, gated(g, model, ident(family)), pos, neg, latent))
    ref = two_sampler_reference(comfy, family, lambda g, m: m, lambda g, m: lora(g, m, ident(family)))
    g, model, pos, neg, latent = base_graph(family)
    base = run_latent(comfy, g, ksampler(g, model, pos, neg, latent))
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) <= 1e-5
    assert rel_err(out, base) > 1e-3, "the adapter must change the result after the gate"


@pytest.mark.parametrize("family", FAMILIES)
def test_start_zero_equals_core_lora_loader_and_start_one_equals_base(comfy, family):
    results = {}
    for name, build in {
        "start0": lambda g, m: gated(g, m, ident(family), start=0.0, strength=0.8),
        "core": lambda g, m: lora(g, m, ident(family), strength=0.8),
        "start1": lambda g, m: gated(g, m, ident(family), start=1.0),
        "strength0": lambda g, m: gated(g, m, ident(family), strength=0.0),
        "base": lambda g, m: m,
    }.items():
        g, model, pos, neg, latent = base_graph(family)
        results[name] = run_latent(comfy, g, ksampler(g, build(g, model), pos, neg, latent))
    assert rel_err(results["start0"], results["core"]) <= 1e-5
    assert torch.equal(results["start1"], results["base"])
    assert torch.equal(results["strength0"], results["base"])
    assert rel_err(results["start0"], results["base"]) > 1e-3


def _trajectory(comfy, family, model_fn, sampler="euler", scheduler="simple", denoise=1.0, steps=STEPS):
    """Run comfy.sample.sample with a callback; returns per-step (x, denoised) and the final latent."""
    import comfy.sample
    import nodes

    model = nodes.UNETLoader().load_unet(f"tiny_{family}.safetensors", "default")[0]
    model = model_fn(model)
    enc = nodes.NODE_CLASS_MAPPINGS["PersonalVideoDevTextEncodeStandIn"]()
    from dev import tiny_models

    w, p = tiny_models.CONTEXT_WIDTH[family], tiny_models.POOLED_WIDTH[family]
    pos = enc.encode("a person walking on a beach", w, p, 16)[0]
    neg = enc.encode("blurry", w, p, 16)[0]
    gen = torch.Generator().manual_seed(3)
    latent = torch.randn(1, 16, 3, 8, 8, generator=gen) * 0.5 if denoise < 1.0 else torch.zeros(1, 16, 3, 8, 8)
    noise = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(11))
    steps_seen = []

    def callback(step, x0, x, total):
        steps_seen.append((step, x.clone(), x0.clone()))

    final = comfy.sample.sample(model, noise, steps, 3.0, sampler, scheduler, pos, neg, latent,
                                denoise=denoise, callback=callback, disable_pbar=True, seed=11)
    return steps_seen, final


def _apply(family, start=0.75, strength=1.0, mode="steps"):
    import nodes

    apply_cls = nodes.NODE_CLASS_MAPPINGS["PersonalVideoApplyIdentityAdapter"]
    load_cls = nodes.NODE_CLASS_MAPPINGS["PersonalVideoLoadIdentityAdapter"]
    adapter = load_cls.execute(ident(family)).args[0]
    return lambda m: apply_cls.execute(m, adapter, strength, start, mode, override_gate_start=True).args[0]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("sampler,scheduler", [("euler", "simple"), ("dpmpp_2m", "karras"),
                                               ("uni_pc", "beta"), ("euler_ancestral", "normal")])
def test_steps_before_gate_are_the_base_models_exactly(comfy, family, sampler, scheduler):
    base, base_final = _trajectory(comfy, family, lambda m: m, sampler, scheduler)
    gated_steps, gated_final = _trajectory(comfy, family, _apply(family), sampler, scheduler)
    assert [s for s, _, _ in base] == list(range(STEPS))
    for (i, bx, bd), (_, gx, gd) in zip(base, gated_steps):
        if i < GATE:
            assert torch.equal(bx, gx) and torch.equal(bd, gd), f"step {i} differs before the gate"
    # The model evaluation of step GATE already uses the adapter.
    assert rel_err(gated_steps[GATE][2], base[GATE][2]) > 1e-4
    assert torch.isfinite(gated_final).all() and rel_err(gated_final, base_final) > 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_partial_denoise_gates_on_the_running_calls_steps(comfy, family):
    base, _ = _trajectory(comfy, family, lambda m: m, denoise=0.5, steps=STEPS)
    gated_steps, _ = _trajectory(comfy, family, _apply(family), denoise=0.5, steps=STEPS)
    assert len(base) == STEPS
    for (i, bx, bd), (_, gx, gd) in zip(base, gated_steps):
        if i < GATE:
            assert torch.equal(bd, gd), f"step {i} differs before the gate"
    assert rel_err(gated_steps[GATE][2], base[GATE][2]) > 1e-4


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("order", ["style_first", "identity_first"])
def test_style_lora_stays_on_identity_is_gated(comfy, family, order):
    def model_fn(m):
        if order == "style_first":
            m = lora(g, m, style(family))
            return gated(g, m, ident(family))
        return lora(g, gated(g, m, ident(family)), style(family))

    g, model, pos, neg, latent = base_graph(family)
    out = run_latent(comfy, g, ksampler(g, model_fn(model), pos, neg, latent))
    ref = two_sampler_reference(comfy, family, lambda g, m: lora(g, m, style(family)),
                                lambda g, m: lora(g, lora(g, m, style(family)), ident(family)))
    g, model, pos, neg, latent = base_graph(family)
    style_only = run_latent(comfy, g, ksampler(g, lora(g, model, style(family)), pos, neg, latent))
    assert rel_err(out, ref) <= 1e-5
    assert rel_err(out, style_only) > 1e-3

    import nodes

    def both(m):
        m = nodes.LoraLoaderModelOnly().load_lora_model_only(m, style(family), 1.0)[0]
        return _apply(family)(m)

    style_steps, _ = _trajectory(comfy, family,
                                 lambda m: nodes.LoraLoaderModelOnly().load_lora_model_only(m, style(family), 1.0)[0])
    both_steps, _ = _trajectory(comfy, family, both)
    for (i, _, sd), (_, _, bd) in zip(style_steps, both_steps):
        if i < GATE:
            assert torch.equal(sd, bd), f"step {i}: style+gated identity must equal style only before the gate"


@pytest.mark.parametrize("family", FAMILIES)
def test_ksampler_advanced_and_sampler_custom_advanced(comfy, family):
    g, model, pos, neg, latent = base_graph(family)
    m = gated(g, model, ident(family))
    adv = g.add("KSamplerAdvanced", model=m, positive=pos, negative=neg, latent_image=latent, add_noise="enable",
                noise_seed=7, steps=STEPS, cfg=3.0, sampler_name="euler", scheduler="simple", start_at_step=0,
                end_at_step=10000, return_with_leftover_noise="disable")
    out_adv = run_latent(comfy, g, adv)

    g, model, pos, neg, latent = base_graph(family)
    m = gated(g, model, ident(family))
    guider = g.add("CFGGuider", model=m, positive=pos, negative=neg, cfg=3.0)
    sigmas = g.add("BasicScheduler", model=m, scheduler="simple", steps=STEPS, denoise=1.0)
    custom = g.add("SamplerCustomAdvanced", noise=g.add("RandomNoise", noise_seed=7), guider=guider,
                   sampler=g.add("KSamplerSelect", sampler_name="euler"), sigmas=sigmas, latent_image=latent)
    out_custom = run_latent(comfy, g, custom)

    ref = two_sampler_reference(comfy, family, lambda g, m: m, lambda g, m: lora(g, m, ident(family)))
    assert rel_err(out_adv, ref) <= 1e-5
    assert rel_err(out_custom, ref) <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_input_model_and_other_clones_untouched(comfy, family):
    import nodes

    base = nodes.UNETLoader().load_unet(f"tiny_{family}.safetensors", "default")[0]
    before = {k: v.clone() for k, v in base.model.diffusion_model.state_dict().items()}
    steps_a, final_a = _trajectory(comfy, family, lambda m: m)
    _, gated_final = _trajectory(comfy, family, _apply(family))
    steps_b, final_b = _trajectory(comfy, family, lambda m: m)
    assert torch.equal(final_a, final_b), "sampling the base model after the gated one must give the same result"
    assert not torch.equal(final_a, gated_final)

    patched = _apply(family)(base)
    assert patched.wrappers.get("apply_model")
    assert not base.wrappers.get("apply_model")
    assert base.weight_wrapper_patches == {} and patched.weight_wrapper_patches == {}
    after = base.model.diffusion_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "base weights were modified"
    assert not getattr(patched, "backup", {}), "a weight backup was left behind"
    hooks = [m for m in base.model.modules() if m._forward_hooks]
    assert hooks == [], "forward hooks were left on the model after sampling"


@pytest.mark.parametrize("family", FAMILIES)
def test_timestep_mode_equals_core_hook_keyframes(comfy, family):
    """gate_mode 'timestep' reproduces core's hook keyframe graph (LoRA strength 0 until 75% of the timestep range)."""
    g, model, pos, neg, latent = base_graph(family)
    out = run_latent(comfy, g, ksampler(g, gated(g, model, ident(family), mode="timestep"), pos, neg, latent,
                                        scheduler="karras"))

    g, model, pos, neg, latent = base_graph(family)
    hooks = g.add("CreateHookLoraModelOnly", lora_name=ident(family), strength_model=1.0)
    kf0 = g.add("CreateHookKeyframe", strength_mult=0.0, start_percent=0.0)
    kf1 = g.add("CreateHookKeyframe", strength_mult=1.0, start_percent=0.75, prev_hook_kf=kf0)
    hooks = g.add("SetHookKeyframes", hooks=hooks, hook_kf=kf1)
    pair = g.add("PairConditioningSetProperties", positive_NEW=pos, negative_NEW=neg, strength=1.0,
                 set_cond_area="default", hooks=hooks)
    ref = run_latent(comfy, g, ksampler(g, model, pair, [pair[0], 1], latent, scheduler="karras"))
    assert rel_err(out, ref) <= 1e-5
