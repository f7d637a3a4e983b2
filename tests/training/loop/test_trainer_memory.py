"""training/loop: out of memory and reduced precision in the training loop, on the toy model of
test_trainer_unit.py (plain torch, no ComfyUI; the same in real ComfyUI: tests/nodes/test_trainer_gpu_grade.py)."""

from __future__ import annotations

import pytest
import torch
from personalvideo.training.adapter.lora import LoRAParameters
from personalvideo.training.loop.trainer import Trainer
from toy_backend import ToyModel, make, toy_identity


@pytest.mark.parametrize("kind", ["cpu allocator", "cuda"])
def test_out_of_memory_stays_an_oom_names_the_settings_and_keeps_the_checkpoint(tmp_path, kind):
    """Nothing can safely run out of memory on this machine (no GPU, no swap), so the backend raises at step 2
    what torch raises when an allocation fails: the CPU allocator's RuntimeError text, or CUDA's
    torch.OutOfMemoryError. Either way the trainer's error must still be a torch.OutOfMemoryError (ComfyUI
    recognizes OOM by that type and unloads models; tests/nodes/test_trainer_comfy.py checks it in ComfyUI)."""
    s, params, backend, bank = make(steps=5)
    run = backend.run

    def failing_run(prompt, seed, fn):
        if len(backend.runs) == 2:
            if kind == "cuda":
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB.")
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                               "you tried to allocate 68719476736 bytes.")
        return run(prompt, seed, fn)

    backend.run = failing_run
    ck = tmp_path / "ck.safetensors"
    trainer = Trainer(backend, params, bank, s, toy_identity, resume_file=ck)
    with pytest.raises(torch.OutOfMemoryError) as info:
        trainer.train()
    message = str(info.value)
    assert "step 2" in message and "frames_per_reward (now 2)" in message and "backprop_last_k" in message
    assert "resume" in message and "allocate" in message  # the original error's text is kept too
    assert info.value.__cause__ is not None and all(p.grad is None for p in params.parameters())
    s2, params2, backend2, bank2 = make(steps=5)
    result = Trainer(backend2, params2, bank2, s2, toy_identity, resume_file=ck).train(resume=True)
    assert result.resumed_from == 2 and len(result.history) == 5
    s3, params3, backend3, bank3 = make(steps=5)
    Trainer(backend3, params3, bank3, s3, toy_identity).train()
    for a, b in zip(params2.parameters(), params3.parameters()):
        assert torch.allclose(a, b, atol=1e-7, rtol=1e-6), "OOM + resume must equal one uninterrupted run"


def test_out_of_memory_inside_the_optimizer_step_keeps_the_last_good_resume_file(tmp_path):
    """A failure while AdamW updates the adapter may leave it half updated: the resume file of the last completed
    step (written at step 2 by save_every=2) must stay on disk unchanged. The failure is injected by a
    wrapper around the optimizer's step (said plainly: no real allocation fails here)."""
    s, params, backend, bank = make(steps=5)
    ck = tmp_path / "ck.safetensors"
    trainer = Trainer(backend, params, bank, s, toy_identity, resume_file=ck)
    step = trainer.optimizer.step

    def step_failing_at_3(*args, **kwargs):
        if trainer.step == 3:
            step(*args, **kwargs)  # the update happens (in part, as far as the resume file can know) ...
            raise torch.OutOfMemoryError("CUDA out of memory.")  # ... then the failure
        return step(*args, **kwargs)

    trainer.optimizer.step = step_failing_at_3
    with pytest.raises(torch.OutOfMemoryError, match="step 3"):
        trainer.train()
    s2, params2, backend2, bank2 = make(steps=5)
    result = Trainer(backend2, params2, bank2, s2, toy_identity, resume_file=ck).train(resume=True)
    assert result.resumed_from == 2, "the half-updated step 3 must not have been saved"
    s3, params3, backend3, bank3 = make(steps=5)
    Trainer(backend3, params3, bank3, s3, toy_identity).train()
    for a, b in zip(params2.parameters(), params3.parameters()):
        assert torch.allclose(a, b, atol=1e-7, rtol=1e-6)


def test_other_runtime_errors_are_not_reported_as_memory(tmp_path):
    s, params, backend, bank = make(steps=2)
    backend.run = lambda prompt, seed, fn: (_ for _ in ()).throw(RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        Trainer(backend, params, bank, s, toy_identity).train()


def _first_gradient(half: bool, loss_scaling: bool, icr_weight: float):
    s, params, backend, bank = make(steps=1, icr_weight=icr_weight, loss_scaling=loss_scaling)
    if half:
        backend.model = ToyModel(params, compute_dtype=torch.float16)
    trainer = Trainer(backend, params, bank, s, toy_identity)
    trainer.train_step(0)
    return params.up[0].grad.clone(), trainer


def test_fp16_compute_loss_scaling_prevents_silent_underflow():
    """A loss whose per-element gradient is below fp16's smallest value (6e-8): a mean over a whole video is,
    here a small weight stands in for that. Without scaling the adapter's gradient is exactly zero; with it,
    it is the float32 gradient up to fp16 rounding."""
    reference, _ = _first_gradient(half=False, loss_scaling=False, icr_weight=1e-6)
    underflow, _ = _first_gradient(half=True, loss_scaling=False, icr_weight=1e-6)
    scaled, trainer = _first_gradient(half=True, loss_scaling=True, icr_weight=1e-6)
    assert float(reference.abs().max()) > 0 and float(underflow.abs().max()) == 0.0
    assert torch.allclose(scaled, reference, rtol=0.05, atol=0.05 * float(reference.abs().max()))
    assert trainer.loss_scale.scale == 2.0**16 and trainer.result.history[0].skipped == ""
    _, trainer32 = _first_gradient(half=False, loss_scaling=False, icr_weight=1.0)
    assert trainer32.loss_scale.scale == 1.0  # off: the identity


def test_fp16_overflow_skips_the_step_lowers_the_scale_and_resumes_with_it(tmp_path):
    s, params, backend, bank = make(steps=12, loss_scaling=True)
    backend.model = ToyModel(params, compute_dtype=torch.float16)
    ck = tmp_path / "ck.safetensors"
    trainer = Trainer(backend, params, bank, s, toy_identity, resume_file=ck)
    trainer.loss_scale.scale = 2.0**24  # overflows fp16 (max 65504) in backward, so it has to come down
    result = trainer.train()
    skipped = [r.skipped for r in result.history]
    assert skipped[0] == "non-finite gradient" and skipped[-1] == "" and result.skipped_non_finite >= 1
    assert trainer.loss_scale.scale == 2.0 ** (24 - result.skipped_non_finite)
    assert all(torch.isfinite(p).all() for p in params.parameters())
    s2, params2, backend2, bank2 = make(steps=14, loss_scaling=True)
    backend2.model = ToyModel(params2, compute_dtype=torch.float16)
    resumed = Trainer(backend2, params2, bank2, s2, toy_identity, resume_file=ck)
    resumed.load_resume_file()
    assert resumed.loss_scale.state() == trainer.loss_scale.state()


def test_layers_outside_the_graph_are_found_except_image_projections():
    from personalvideo.training.loop.gradients import layers_without_gradient

    params = LoRAParameters({"blocks.0.attn.q.weight": (2, 2), "blocks.0.attn.o.weight": (2, 2),
                             "blocks.0.cross_attn.k_img.weight": (2, 2)}, rank=1, alpha=1.0, seed=0)
    pairs = params.pairs()
    (pairs["blocks.0.attn.o.weight"][0] * 2).sum().backward()  # only o is in the graph
    assert layers_without_gradient(pairs) == ["blocks.0.attn.q.weight"]
