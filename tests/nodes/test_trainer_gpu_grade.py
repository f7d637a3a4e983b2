"""What a GPU user hits, shown in real ComfyUI on the CPU (issue 11): out of memory keeps ComfyUI's OOM handling,
non-differentiable attention kernels, text encoding before training, fp16 compute, adapter copies on the
device (fp8 base weights: test_trainer_fp8.py). Same tiny models and stand-ins as test_trainer_comfy.py (its ``rt`` fixture and ``train_graph``)."""

from __future__ import annotations

import torch
from comfy_runtime_errors import graph_error
from graphs import pack_module
from test_trainer_comfy import _resume_file_step, rt, train_graph  # noqa: F401 (rt is a fixture)


def test_out_of_memory_is_seen_by_comfyui_as_oom_and_resume_continues(rt, monkeypatch):  # noqa: F811
    """Forced OOM: a wrapper around the backend's decode raises torch.OutOfMemoryError (what CUDA raises) at the
    5th decode, i.e. step 2's adapter frames, after that step's rollout ran (nothing can really run out of
    memory on this machine). ComfyUI must recognize it as OOM (its OOM tip in the message, its unload of all
    models), the message must name the settings, and the resume file of step 2 (two good steps) must resume."""
    import comfy.model_management as mm

    backend_cls = pack_module("nodes.runtime.backend").ComfyBackend
    decode, calls, unloads = backend_cls.decode, [], []

    def decode_then_oom(self, latent, frames):
        calls.append(1)
        if len(calls) == 5:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 12.00 GiB (forced by the test)")
        return decode(self, latent, frames)

    monkeypatch.setattr(backend_cls, "decode", decode_then_oom)
    unload = mm.unload_all_models
    monkeypatch.setattr(mm, "unload_all_models", lambda: (unloads.append(1), unload())[1])
    g, tr, *_ = train_graph("wan21", steps=4, run_name="oom", save_every=0)
    g.capture(tr, "x")
    with graph_error() as err:
        rt.run(g.nodes)
    assert "OutOfMemory" in err.message and "ran out of memory on your GPU" in err.message, err.message
    assert unloads, "ComfyUI unloads all models on OOM; it did not, so it did not see an OOM"
    for setting in ("step 2", "frames_per_reward (now 2)", "sampling_steps (now 8)", "backprop_last_k (now 0)",
                    "decode_gradient (now checkpointed)",
                    "resume"):
        assert setting in err.message, (setting, err.message)
    assert _resume_file_step(rt, "oom") == 2
    monkeypatch.setattr(backend_cls, "decode", decode)
    g, tr, *_ = train_graph("wan21", steps=4, run_name="oom", save_every=0, resume=True)
    g.capture([tr[0], 2], "summary")
    rt.run(g.nodes)
    summary = rt.captured()["summary"]
    assert "4 steps (4 updated the adapter" in summary and "resumed from step 2" in summary, summary


def _no_backward_attention():
    """Stands in for sage attention (not installable here, and its kernel needs CUDA): ComfyUI's SDPA computed
    where autograd cannot see it, so its output has no gradient towards q/k/v, exactly like a kernel without
    backward. Decorated with ComfyUI's wrap_attn as core's sage and flash functions are."""
    from comfy.ldm.modules import attention

    sdpa = attention.attention_pytorch.__wrapped__

    @attention.wrap_attn
    def attention_no_backward(q, k, v, heads, **kwargs):
        with torch.no_grad():
            return sdpa(q, k, v, heads, **kwargs)

    return attention_no_backward


def _first_step_gradients(rt, monkeypatch, run_name):  # noqa: F811
    trainer = pack_module("training.loop.trainer").Trainer
    train_step, grads = trainer.train_step, {}

    def recording(self, step):
        record = train_step(self, step)
        if step == 0:
            grads.update({k: None if up.grad is None else up.grad.clone() for k, (up, _) in self.params.pairs().items()})
        return record

    monkeypatch.setattr(trainer, "train_step", recording)
    g, tr, *_ = train_graph("wan21", steps=1, run_name=run_name)
    g.capture(tr, "adapter")
    rt.run(g.nodes)
    return grads


def test_attention_without_backward_still_trains_q_k_v(rt, monkeypatch):  # noqa: F811
    """The model module's attention (bound at import, as Wan's is) is a kernel without backward: the training run
    routes it to SDPA through ComfyUI's optimized_attention_override, so q/k/v get gradient, equal to the
    gradient with ComfyUI's own differentiable attention."""
    import comfy.ldm.wan.model as wan

    reference = _first_step_gradients(rt, monkeypatch, "attn_reference")
    monkeypatch.setattr(wan, "optimized_attention", _no_backward_attention())
    grads = _first_step_gradients(rt, monkeypatch, "attn_no_backward")
    qkv = [k for k in grads if k.rsplit(".", 2)[-2] in ("q", "k", "v") and "self_attn" in k]
    assert len(qkv) == 6  # 2 blocks x q, k, v
    for key in qkv:
        assert grads[key] is not None and float(grads[key].abs().sum()) > 0, key
        assert torch.allclose(grads[key], reference[key], rtol=1e-4, atol=1e-6 * float(reference[key].abs().max()))


def test_attention_out_of_reach_of_the_override_is_refused_naming_the_layers(rt, monkeypatch):  # noqa: F811
    """A pack that replaced the module's attention by a function ComfyUI's override hook cannot reach (here: the
    no-backward kernel with the hook switched off) must stop training with an error, not train o only."""
    import comfy.ldm.wan.model as wan

    no_backward = _no_backward_attention()
    monkeypatch.setattr(wan, "optimized_attention", lambda *a, **kw: no_backward.__wrapped__(*a, **kw))
    g, tr, *_ = train_graph("wan21", steps=1, run_name="attn_refused")
    g.capture(tr, "adapter")
    with graph_error() as err:
        rt.run(g.nodes)
    # q, k, v of self- and cross-attention in both blocks: 12 of the 16 adapted layers (o still gets gradient).
    assert "12 of 16 adapted layers got no gradient" in err.message and "_attn.k.weight" in err.message, err.message
    assert "sage" in err.message


def test_prompts_are_encoded_before_training_and_results_are_unchanged(rt, monkeypatch):  # noqa: F811
    """Every text-encoder call (counted at ComfyBackend's ``encode``) happens before the first training step,
    once per distinct text of the bank plus the negative; the adapter equals the one trained with lazy encoding
    (each prompt encoded when first drawn, what the trainer did before)."""
    backend_mod = pack_module("nodes.runtime.backend")
    trainer = pack_module("training.loop.trainer").Trainer
    encode, train_step, events = backend_mod.encode, trainer.train_step, []
    monkeypatch.setattr(backend_mod, "encode", lambda clip, text: (events.append(("encode", text)), encode(clip, text))[1])
    monkeypatch.setattr(trainer, "train_step", lambda self, step: (events.append(("step", step)),
                                                                   train_step(self, step))[1])
    g, tr, *_ = train_graph("wan21", steps=3, run_name="encode_once")
    g.capture(tr, "eager")
    rt.run(g.nodes)
    bank = pack_module("training.prompts").build_prompt_bank("a man", "", "blurry", use_built_in=True)
    encoded = [text for kind, text in events if kind == "encode"]
    first_step = events.index(("step", 0))
    assert all(kind == "encode" for kind, _ in events[:first_step]) and len(encoded) == first_step, events[:60]
    assert sorted(encoded) == sorted({*bank.prompts, "blurry"}) and len(bank.prompts) >= 40

    monkeypatch.setattr(backend_mod.ComfyBackend, "encode_prompts", lambda self, texts: 0)  # the lazy way
    events.clear()
    g, tr, *_ = train_graph("wan21", steps=3, run_name="encode_lazily")
    g.capture(tr, "lazy")
    rt.run(g.nodes)
    assert 0 < len([e for e in events if e[0] == "encode"]) <= 4  # 3 prompts + the negative, mid-run
    eager, lazy = rt.captured()["eager"], rt.captured()["lazy"]
    assert eager.keys() == lazy.keys() and all(torch.equal(eager[k], lazy[k]) for k in eager)


def test_release_model_unloads_a_loaded_text_encoder(rt):  # noqa: F811
    """The unload itself, on a real ModelPatcher loaded by ComfyUI's model management (the tests' text encoder is
    a stand-in without a patcher: no tiny UMT5 exists)."""
    import comfy.model_management as mm
    import comfy.model_patcher

    release_model = pack_module("nodes.runtime.backend").release_model
    patcher = comfy.model_patcher.ModelPatcher(torch.nn.Linear(8, 8), load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())
    mm.load_models_gpu([patcher])
    assert any(m.model is patcher for m in mm.current_loaded_models)
    assert release_model(patcher) and not any(m.model is patcher for m in mm.current_loaded_models)
    assert not release_model(patcher)


def test_fp16_compute_turns_loss_scaling_on_and_trains(rt, monkeypatch):  # noqa: F811
    """ComfyUI computing the diffusion model in fp16, as on a card without bf16: its own --fp16-unet switch, and
    ``should_use_fp16`` answering yes as it does for such cards (the CPU answers no). The node must turn loss
    scaling on and the steps must update the adapter with finite values."""
    import comfy.model_management as mm

    monkeypatch.setattr(mm.args, "fp16_unet", True)
    monkeypatch.setattr(mm, "should_use_fp16", lambda *args, **kwargs: True)
    dtypes = []
    trainer = pack_module("training.loop.trainer").Trainer
    generate = trainer.generate

    def recording(self, *args):
        rollout = generate(self, *args)
        base = self.backend.patcher.model
        dtypes.append((base.get_dtype(), base.manual_cast_dtype, rollout.tuned.dtype))
        return rollout

    monkeypatch.setattr(trainer, "generate", recording)
    g, tr, *_ = train_graph("wan21", steps=2, run_name="fp16")
    g.capture([tr[0], 2], "summary")
    g.capture(tr, "adapter")
    rt.run(g.nodes)
    summary = rt.captured()["summary"]
    assert dtypes[0][:2] == (torch.float16, None), dtypes  # fp16 weights, no cast: fp16 compute
    assert "fp16 compute: dynamic loss scaling on" in summary and "2 steps (2 updated the adapter" in summary, summary
    ups = [v for k, v in rt.captured()["adapter"].items() if "lora_up" in k]
    assert all(torch.isfinite(v).all() for v in ups) and any(float(v.abs().sum()) > 0 for v in ups)


def test_apply_node_drops_its_device_copies_of_the_adapter_after_sampling(rt, monkeypatch):  # noqa: F811
    """The gate caches the LoRA on the sampling device (one copy per device, not one transfer per call); those
    copies are outside ComfyUI's memory accounting, so they must be gone when the sampler call ends."""
    import comfy.patcher_extension
    from graphs import base_graph, gated, ksampler, run_latent

    weight_delta = pack_module("nodes.runtime.gate").WeightDelta
    call, cached = weight_delta.__call__, []

    def counting(self, weight):
        out = call(self, weight)
        cached.append(len(self._on_device))
        return out

    monkeypatch.setattr(weight_delta, "__call__", counting)
    g, model, pos, neg, latent = base_graph("wan21")
    patched = gated(g, model, "identity_wan21.safetensors")
    g.capture(patched, "patched")
    run_latent(rt, g, ksampler(g, patched, pos, neg, latent))
    assert cached and max(cached) == 1, "the gate must use its device copy while sampling"
    wrappers = rt.captured()["patched"].wrappers[comfy.patcher_extension.WrappersMP.APPLY_MODEL]
    gates = [fn.__self__ for fns in wrappers.values() for fn in fns if hasattr(fn, "__self__")]
    assert len(gates) == 1 and gates[0].deltas
    assert all(not delta._on_device for delta in gates[0].deltas.values()), "device copies left after sampling"
