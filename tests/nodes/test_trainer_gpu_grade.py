"""What a GPU user hits, shown in real ComfyUI on the CPU (issue 11): out of memory keeps ComfyUI's OOM handling,
fp8 base weights, non-differentiable attention kernels, text encoding before training, adapter copies on the
device. Same tiny models and stand-ins as test_trainer_comfy.py (its ``rt`` fixture and ``train_graph``)."""

from __future__ import annotations

import pytest
import torch

from comfy_runtime_errors import graph_error
from graphs import pack_module
from test_trainer_comfy import _checkpoint_step, rt, train_graph  # noqa: F401 (rt is a fixture)


def test_out_of_memory_is_seen_by_comfyui_as_oom_and_resume_continues(rt, monkeypatch):  # noqa: F811
    """Forced OOM: a wrapper around the backend's decode raises torch.OutOfMemoryError (what CUDA raises) at the
    5th decode, i.e. step 2's adapter frames, after that step's rollout ran (nothing can really run out of
    memory on this machine). ComfyUI must recognise it as OOM (its OOM tip in the message, its unload of all
    models), the message must name the settings, and the checkpoint of step 2 (two good steps) must resume."""
    import comfy.model_management as mm

    backend_cls = pack_module("nodes.train_backend").ComfyBackend
    decode, calls, unloads = backend_cls.decode, [], []

    def decode_then_oom(self, latent, frames):
        calls.append(1)
        if len(calls) == 5:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 12.00 GiB (forced by the test)")
        return decode(self, latent, frames)

    monkeypatch.setattr(backend_cls, "decode", decode_then_oom)
    unload = mm.unload_all_models
    monkeypatch.setattr(mm, "unload_all_models", lambda: (unloads.append(1), unload())[1])
    g, tr, *_ = train_graph("wan21", steps=4, run_name="oom", checkpoint_every=0)
    g.capture(tr, "x")
    with graph_error() as err:
        rt.run(g.nodes)
    assert "OutOfMemory" in err.message and "ran out of memory on your GPU" in err.message, err.message
    assert unloads, "ComfyUI unloads all models on OOM; it did not, so it did not see an OOM"
    for setting in ("step 2", "frames_per_reward (now 2)", "sampling_steps (now 8)", "backprop_last_k (now 0)",
                    "resume"):
        assert setting in err.message, (setting, err.message)
    assert _checkpoint_step(rt, "oom") == 2
    monkeypatch.setattr(backend_cls, "decode", decode)
    g, tr, *_ = train_graph("wan21", steps=4, run_name="oom", checkpoint_every=0, resume=True)
    g.capture([tr[0], 2], "summary")
    rt.run(g.nodes)
    summary = rt.captured()["summary"]
    assert "4 steps (4 updated the adapter" in summary and "resumed from step 2" in summary, summary


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
        rollouts.append((rollout.source.detach().clone(), rollout.adapter.detach().clone()))
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
    from safetensors.torch import load_file, save_file

    from graphs import base_graph, gated, ksampler, run_latent

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
