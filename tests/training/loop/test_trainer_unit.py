"""training/: the rollout and the training loop on a toy video model in plain torch (no ComfyUI).

The toy model, decoder and reward are stand-ins written here so the loop's own guarantees can be checked
exactly and fast: gate latent independence, gradients only in the adapter, finite differences,
determinism, resume, cancel, NaN skipping. The real model, VAE and ArcFace run in test_trainer_comfy.py.
"""

from __future__ import annotations


import pytest
import torch

from personalvideo.training.adapter.gate import first_gated_step, step_gate_sigma
from personalvideo.training.adapter.lora import LoRAParameters
from personalvideo.training.loop.rollout import gated_rollout
from personalvideo.training.loop.trainer import Trainer, TrainSettings
from toy_backend import C, H, T, W, euler_sample, make, toy_identity



def test_fresh_adapter_changes_nothing_and_gate_latent_is_independent_of_it():
    s, params, backend, _ = make()
    x = torch.randn(1, C, T, H, W)
    with torch.no_grad():
        params.up[0].normal_()  # a non-zero adapter
    g = first_gated_step(8, 0.75)
    out = backend.rollout(x, 0.75)
    plain = x
    with torch.no_grad():
        for i in range(8):
            if i == g:
                plain_gate = plain.clone()
            denoised = backend.model.denoise(plain, backend.sigmas[i], False)
            plain = plain + (plain - denoised) / backend.sigmas[i] * (backend.sigmas[i + 1] - backend.sigmas[i])
    assert torch.equal(out.gate_latent, plain_gate) and out.gated_calls == 8 - g
    assert torch.equal(out.source, plain), "the source branch must be plain sampling with the base model"
    assert not torch.allclose(out.tuned, out.source)
    # the adapter acted only in the gated steps
    assert [on for _, on in backend.model.calls if on] and all(
        sigma <= float(backend.sigmas[g]) for sigma, on in backend.model.calls if on)
    fresh = LoRAParameters({"lin.weight": (C, C)}, 2, 2.0, seed=1)
    assert torch.count_nonzero(fresh.up[0]) == 0


def test_pre_gate_calls_run_once_and_the_sampler_is_checked():
    s, params, backend, _ = make()
    x = torch.randn(1, C, T, H, W)
    backend.rollout(x, 0.75)
    g = first_gated_step(8, 0.75)
    # source run: all 8 calls without the adapter; tuned run: only the gated calls, with it
    assert [on for _, on in backend.model.calls] == [False] * 8 + [True] * (8 - g)

    def no_grad_sampler(model_fn, start):
        with torch.no_grad():
            return euler_sample(backend.sigmas)(model_fn, start)

    with pytest.raises(RuntimeError, match="cut the gradient"):
        gated_rollout(no_grad_sampler, backend.model.denoise, x, step_gate_sigma(backend.sigmas, 0.75))
    draws = iter(range(100))

    def noisy_sampler(model_fn, start):  # a different perturbation on every run: not replayable
        return euler_sample(backend.sigmas)(model_fn, start + 1e-3 * next(draws))

    with pytest.raises(RuntimeError, match="not deterministic"):
        gated_rollout(noisy_sampler, backend.model.denoise, x, step_gate_sigma(backend.sigmas, 0.75))
    with pytest.raises(ValueError, match="never opens"):
        gated_rollout(euler_sample(backend.sigmas), backend.model.denoise, x, None)


def test_only_adapter_parameters_get_gradients_and_they_match_finite_differences():
    s, params, backend, _ = make()
    torch.manual_seed(0)
    with torch.no_grad():
        params.up[0].normal_(std=0.3)
    base = torch.nn.Parameter(backend.model.weight.clone(), requires_grad=False)
    backend.model.weight = base
    x = torch.randn(1, C, T, H, W, dtype=torch.float64)
    params.double()
    backend.model.weight = base.double()
    backend.sigmas = backend.sigmas.double()
    backend.proj = backend.proj.double()

    def loss_fn():
        r = backend.rollout(x, 0.75)
        return toy_identity(backend.decode(r.tuned, [0, 2])).loss

    loss_fn().backward()
    assert base.grad is None
    grad = params.up[0].grad.clone()
    assert grad.abs().sum() > 0 and params.down[0].grad.abs().sum() > 0
    eps = 1e-6
    for idx in [(0, 0), (1, 1), (3, 0)]:
        with torch.no_grad():
            params.up[0][idx] += eps
            plus = float(loss_fn())
            params.up[0][idx] -= 2 * eps
            minus = float(loss_fn())
            params.up[0][idx] += eps
        fd = (plus - minus) / (2 * eps)
        assert abs(fd - float(grad[idx])) <= 1e-6 + 1e-4 * abs(fd), (idx, fd, float(grad[idx]))


def test_backprop_last_k_still_uses_the_adapter_in_earlier_gated_steps():
    s, params, backend, _ = make()
    with torch.no_grad():
        params.up[0].normal_(std=0.3)
    x = torch.randn(1, C, T, H, W)
    full = backend.rollout(x, 0.5, backprop_last_k=0)
    last1 = backend.rollout(x, 0.5, backprop_last_k=1)
    assert torch.allclose(full.tuned, last1.tuned, atol=1e-6)  # same forward
    g_full = torch.autograd.grad(full.tuned.sum(), params.up[0])[0]
    g_last = torch.autograd.grad(last1.tuned.sum(), params.up[0])[0]
    assert g_last.abs().sum() > 0 and not torch.allclose(g_full, g_last)


def test_training_raises_the_reward_and_is_deterministic():
    s, params, backend, bank = make(steps=30)
    result = Trainer(backend, params, bank, s, toy_identity).train()
    sims = [r.similarity for r in result.history]
    assert sum(sims[-5:]) / 5 > sum(sims[:5]) / 5 + 0.01
    assert not any(r.skipped for r in result.history)
    s2, params2, backend2, bank2 = make(steps=30)
    Trainer(backend2, params2, bank2, s2, toy_identity).train()
    assert all(torch.equal(a, b) for a, b in zip(params.parameters(), params2.parameters()))
    assert len({p for p, _ in backend.runs}) == 3, "every prompt of the bank is used"


def test_resume_continues_exactly(tmp_path):
    s, params, backend, bank = make(steps=8)
    Trainer(backend, params, bank, s, toy_identity).train()

    s_half, params_a, backend_a, bank_a = make(steps=4)
    Trainer(backend_a, params_a, bank_a, s_half, toy_identity, resume_file=tmp_path / "ck.safetensors").train()
    s_full, params_b, backend_b, bank_b = make(steps=8)
    trainer = Trainer(backend_b, params_b, bank_b, s_full, toy_identity, resume_file=tmp_path / "ck.safetensors")
    result = trainer.train(resume=True)
    assert result.resumed_from == 4 and len(result.history) == 8
    for a, b in zip(params.parameters(), params_b.parameters()):
        assert torch.allclose(a, b, atol=1e-7, rtol=1e-6)


def _resume_file(tmp_path, **settings):
    """A 2-step run's resume file (toy model, rank 2, seed 0 unless ``settings`` say otherwise)."""
    base = dict(steps=2, sampling_steps=8, learning_rate=5e-2, rank=2, alpha=2.0, frames_per_reward=2, seed=0,
                save_every=2)
    s, params, backend, bank = make(settings=TrainSettings(**(base | settings)))
    ck = tmp_path / "run.safetensors"
    Trainer(backend, params, bank, s, toy_identity, resume_file=ck).train()
    return ck, base


@pytest.mark.parametrize("key, saved, other", [("rank", 2, 3), ("gate_start", 0.75, 0.5), ("sampling_steps", 8, 10),
                                               ("seed", 0, 1), ("expert_boundary", None, 0.875)])
def test_resume_refuses_a_resume_file_trained_with_other_settings(tmp_path, key, saved, other):
    """``resume`` is on by default: a run with another rank, gate, schedule, seed or expert split must not continue
    (or silently restart over) the resume file of another experiment, nor overwrite it."""
    ck, base = _resume_file(tmp_path)
    written = ck.read_bytes()
    s, params, backend, bank = make(settings=TrainSettings(**(base | {"steps": 4, key: other})))
    trainer = Trainer(backend, params, bank, s, toy_identity, resume_file=ck)
    with pytest.raises(ValueError, match=rf"resume: .*run.safetensors was trained with {key}={saved}, this run has "
                                         rf"{key}={other}; use the same value or turn resume off"):
        trainer.train(resume=True)
    assert ck.read_bytes() == written, "a refused resume must leave the resume file as it was"


def test_resume_refuses_a_file_that_is_not_a_resume_file(tmp_path):
    from personalvideo.training.atomic import save_safetensors_atomic

    s, params, backend, bank = make(steps=2)
    adapter = tmp_path / "adapter.safetensors"  # a saved adapter: safetensors, but no resume-file header
    save_safetensors_atomic(adapter, params.lora_state_dict(), {"personalvideo.gate_start": "0.75"})
    with pytest.raises(ValueError, match=r"resume: .*adapter.safetensors is not a PersonalVideo resume file "
                                         r"\(a safetensors file without the 'personalvideo.checkpoint' header\); "
                                         r"expected the resume file a training run writes there; use another "
                                         r"run_name"):
        Trainer(backend, params, bank, s, toy_identity, resume_file=adapter).train(resume=True)
    text = tmp_path / "notes.safetensors"
    text.write_text("not a tensor file")
    with pytest.raises(ValueError, match=r"resume: .*notes.safetensors is not a PersonalVideo resume file "
                                         r"\(not a safetensors file: .*\); expected the resume file .* turn "
                                         r"resume off"):
        Trainer(backend, params, bank, s, toy_identity, resume_file=text).train(resume=True)
    assert text.read_text() == "not a tensor file"


def test_adapter_state_refuses_other_layers_and_shapes():
    """LoRAParameters.load_lora_state_dict (resume): the layers and shapes must be the ones this run adapts."""
    trained = LoRAParameters({"a.weight": (4, 6), "b.weight": (4, 4)}, 2, 2.0, seed=0).lora_state_dict()
    with pytest.raises(ValueError, match=r"resume file: no tensors for c; it was made with other layers or "
                                         r"another model; resume with the same layers and model, or turn resume off"):
        LoRAParameters({"a.weight": (4, 6), "b.weight": (4, 4), "c.weight": (4, 4)}, 2, 2.0, seed=0) \
            .load_lora_state_dict(trained)
    with pytest.raises(ValueError, match=r"resume file: holds 1 layer\(s\) this run does not adapt "
                                         r"\(e.g. b\); it was made with other layers"):
        LoRAParameters({"a.weight": (4, 6)}, 2, 2.0, seed=0).load_lora_state_dict(trained)
    with pytest.raises(ValueError, match=r"resume file: a holds up \(4, 2\) and down \(2, 6\) \(rank 2\), "
                                         r"this run needs \(4, 3\) and \(3, 6\) \(rank 3\); resume with the same "
                                         r"rank"):
        LoRAParameters({"a.weight": (4, 6), "b.weight": (4, 4)}, 3, 3.0, seed=0).load_lora_state_dict(trained)
    with pytest.raises(ValueError, match=r"a holds up \(4, 2\) and down \(2, 6\) \(rank 2\), this run needs "
                                         r"\(8, 2\) and \(2, 6\) \(rank 2\)"):  # same rank, another model's width
        LoRAParameters({"a.weight": (8, 6), "b.weight": (4, 4)}, 2, 2.0, seed=0).load_lora_state_dict(trained)


def test_cancel_keeps_a_resume_file_that_resumes(tmp_path):
    s, params, backend, bank = make(steps=6)
    ck = tmp_path / "ck.safetensors"

    class Cancelled(Exception):
        pass

    def cancel_after_step_2(record, preview):
        if record.step == 2:
            raise Cancelled()

    with pytest.raises(Cancelled):
        Trainer(backend, params, bank, s, toy_identity, resume_file=ck, on_step=cancel_after_step_2).train()
    assert ck.exists()
    s2, params2, backend2, bank2 = make(steps=6)
    result = Trainer(backend2, params2, bank2, s2, toy_identity, resume_file=ck).train(resume=True)
    assert result.resumed_from == 3 and len(result.history) == 6  # step 2 had completed
    s3, params3, backend3, bank3 = make(steps=6)
    Trainer(backend3, params3, bank3, s3, toy_identity).train()
    for a, b in zip(params2.parameters(), params3.parameters()):
        assert torch.allclose(a, b, atol=1e-7, rtol=1e-6)


def test_non_finite_loss_is_skipped_and_never_reaches_the_weights():
    s, params, backend, bank = make(steps=4)
    calls = {"n": 0}

    def nan_at_step_1(frames):
        calls["n"] += 1  # two calls per step: adapter frames, then source frames
        r = toy_identity(frames)
        if calls["n"] == 3:  # step 1's adapter frames
            r.loss = r.loss * float("nan")
        return r

    snapshots = []
    trainer = Trainer(backend, params, bank, s, nan_at_step_1,
                      on_step=lambda rec, prev: snapshots.append([p.detach().clone() for p in params.parameters()]))
    result = trainer.train()
    assert [r.skipped for r in result.history] == ["", "non-finite loss", "", ""]
    assert result.skipped_non_finite == 1
    assert all(torch.equal(a, b) for a, b in zip(snapshots[0], snapshots[1]))
    assert all(torch.isfinite(p).all() for p in params.parameters())


def test_semantic_reward_with_one_frame_is_refused_before_training():
    settings = TrainSettings(steps=2, sampling_steps=8, rank=2, alpha=2.0, frames_per_reward=1)
    s, params, backend, bank = make(settings=settings)
    with pytest.raises(ValueError, match="frames_per_reward: got 1"):
        Trainer(backend, params, bank, s, toy_identity, semantic_score=lambda frames, prompt: frames.mean((1, 2, 3)))
    Trainer(backend, params, bank, s, toy_identity)  # without SCR one frame is fine
