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
