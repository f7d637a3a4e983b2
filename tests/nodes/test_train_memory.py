"""Room for backward: the trainer's sampling calls ask ComfyUI for a training step's memory (nodes/runtime/memory.py),
in real ComfyUI with the tiny Wan. What memory that frees or keeps on a card only a GPU shows (the peaks are in
benchmarks/gpu_check.sh's table); here: that ComfyUI's own estimate is asked for the scaled batch."""

from __future__ import annotations

from graphs import base_graph, install_models, ksampler, pack_module, run_latent
from test_trainer_comfy import rt, train_graph  # noqa: F401  (rt: the trainer tests' module fixture)


def test_training_asks_comfyui_for_room_for_backward(rt, monkeypatch):  # noqa: F811
    import comfy.sampler_helpers  # after the runtime booted (it sets --cpu)

    seen = []
    estimate = comfy.sampler_helpers.estimate_memory

    def recording(model, noise_shape, conds):
        seen.append(list(noise_shape))
        return estimate(model, noise_shape, conds)

    monkeypatch.setattr(comfy.sampler_helpers, "estimate_memory", recording)
    for blocks in (True, False):
        seen.clear()
        g, tr, *_ = train_graph("wan21", steps=1, run_name=f"memory_{blocks}")
        g.nodes[tr[0]]["inputs"]["checkpoint_blocks"] = blocks
        g.capture(tr, "x")
        rt.run(g.nodes)
        factor = pack_module("nodes.runtime.memory").CHECKPOINTED_FACTOR + (0 if blocks else 2)  # tiny Wan: 2 blocks
        assert seen and all(shape[0] == factor for shape in seen), (blocks, seen)
    # An ordinary KSampler on the same model still asks for a forward's room: the wrapper lives on the training
    # clone only.
    seen.clear()
    install_models(rt)
    g, model, pos, neg, latent = base_graph("wan21", steps=2)
    run_latent(rt, g, ksampler(g, model, pos, neg, latent, steps=2))
    assert seen and all(shape[0] == 1 for shape in seen), seen
