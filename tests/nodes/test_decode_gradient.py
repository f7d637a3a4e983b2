"""The trainer's VAE decode with gradient (ComfyBackend.decode, nodes/runtime/vae_decode.py,
training/loop/causal_decode.py) on the tiny Wan 2.1 VAE loaded by core VAELoader in real ComfyUI.

``checkpointed`` must give the plain decode's frames and gradient; ``truncated`` the same frames and a gradient
only into the latent frames holding a requested frame; a VAE that is not walked per latent frame decodes whole.
The peak memory these modes reach is measured in benchmarks/training_step (not asserted here).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dev import tiny_models
from graphs import MODEL_FILES, install_models, pack_module
from test_trainer_comfy import rt, train_graph  # noqa: F401  (rt: the trainer tests' model/reward setup fixture)

FRAMES = [0, 6, 11, 16]  # latent frames 0, 2, 3, 4 of a 5-latent-frame (17-frame) clip; latent frame 1 holds none


@pytest.fixture(scope="module")
def backend(comfy):
    import nodes

    install_models(comfy)
    tb, autograd = pack_module("nodes.runtime.backend"), pack_module("nodes.runtime.autograd")
    with autograd.training_mode():
        model = nodes.UNETLoader().load_unet(MODEL_FILES["wan21"], "default")[0]
        vae = nodes.VAELoader().load_vae("tiny_wan_vae.safetensors")[0]
        autograd.make_trainable(model.model, model.model.latent_format)
        autograd.make_trainable(vae.first_stage_model)
    # Only what decode() reads: the model (latent format, loading) and the VAE; the sampler parts are not used.
    b = object.__new__(tb.ComfyBackend)
    b.patcher, b.vae, b.settings = model, vae, tb.ComfyBackendSettings("", 64, 64, 17, 1, 1.0)
    b.geometry = pack_module("nodes.runtime.latent_geometry").latent_geometry(model, vae)
    return b


def _walks(first_stage_model) -> bool:
    """Whether the trainer decodes this VAE latent frame by latent frame (else whole: causal_vae_frames gives None)."""
    z = torch.zeros(1, 16, 1, 8, 8)
    with torch.no_grad():
        return pack_module("nodes.runtime.vae_decode").causal_vae_frames(first_stage_model, z, [0], "plain") is not None


def walk_is_known(version: str) -> bool:
    """The ComfyUI versions whose Wan VAE cache API nodes/runtime/vae_decode.py walks: 0.3.75 (CI) and 0.33."""
    return version == "0.3.75" or version.startswith("0.33.")


@pytest.fixture
def walked(backend, comfy):
    """The per-latent-frame walk knows the Wan VAE cache APIs of ComfyUI 0.3.75 and 0.33
    (nodes/runtime/vae_decode.py); a ComfyUI with yet another one decodes whole instead, so the walk's own claims
    cannot be checked there (a skip). On 0.3.75 and 0.33 a VAE the walk does not take is a failure: the detection
    broke, not the ComfyUI."""
    if not _walks(backend.vae.first_stage_model):
        assert not walk_is_known(comfy.version), (f"ComfyUI {comfy.version}: its Wan VAE is not walked, but "
                                                  "nodes/runtime/vae_decode.py walks its cache API; the detection "
                                                  "broke")
        pytest.skip(f"ComfyUI {comfy.version}'s Wan VAE decoder cache API is not walked (decoded whole); see "
                    "nodes/runtime/vae_decode.py")
    return backend


def _decode(backend, mode, frames=FRAMES, latent_frames=5, seed=0):
    autograd = pack_module("nodes.runtime.autograd")
    gen = torch.Generator().manual_seed(seed)
    latent = torch.randn(1, 16, latent_frames, 8, 8, generator=gen).requires_grad_(True)
    weights = torch.randn(len(frames), 64, 64, 3, generator=gen)
    with autograd.training_mode():
        backend.settings = dataclasses.replace(backend.settings, decode_gradient=mode)
        out = backend.decode(latent, frames)
        (out * weights).sum().backward()
    return out.detach(), latent.grad


def test_checkpointed_decode_equals_plain_frames_and_gradient(walked, backend):
    plain_frames, plain_grad = _decode(backend, "plain")
    frames, grad = _decode(backend, "checkpointed")
    assert frames.shape == (4, 64, 64, 3) and plain_grad.abs().sum() > 0
    assert torch.allclose(frames, plain_frames, atol=1e-6)
    assert torch.allclose(grad, plain_grad, rtol=1e-4, atol=1e-5 * float(plain_grad.abs().max()))
    # The causal cache carries gradient into latent frame 1 although none of its frames is asked for.
    assert grad[:, :, 1].abs().sum() > 0


def test_truncated_decode_same_frames_gradient_only_into_the_frames_latent(walked, backend):
    plain_frames, plain_grad = _decode(backend, "plain")
    frames, grad = _decode(backend, "truncated")
    assert torch.allclose(frames, plain_frames, atol=1e-6)
    assert grad[:, :, 1].abs().sum() == 0, "latent frame 1 holds no requested frame: no gradient with truncation"
    for i in (0, 2, 3, 4):
        assert grad[:, :, i].abs().sum() > 0
    # The last latent frame's cache feeds nothing after it: its gradient is the plain one there ...
    assert torch.allclose(grad[:, :, 4], plain_grad[:, :, 4], rtol=1e-4, atol=1e-5 * float(plain_grad.abs().max()))
    # ... while earlier ones lose the part that came through later frames' caches: an approximation.
    assert not torch.allclose(grad[:, :, 0], plain_grad[:, :, 0], rtol=1e-3, atol=0)


def test_only_latent_frames_up_to_the_last_requested_one_are_decoded(walked, backend, monkeypatch):
    seen = []
    decoder = backend.vae.first_stage_model.decoder
    original = decoder.forward

    def counting(x, *args, **kwargs):
        seen.append(x.shape[2])
        return original(x, *args, **kwargs)

    monkeypatch.setattr(decoder, "forward", counting)
    _decode(backend, "checkpointed", frames=[1, 5], latent_frames=5)
    # latent frames 0..2 forward once each, then recomputed once each in backward; 3 and 4 never
    assert len(seen) == 6 and all(t == 1 for t in seen)


def test_a_vae_that_is_not_walked_decodes_whole_with_the_same_result(walked, backend):
    """A VAE class other than Wan's (HunyuanVideo's, LTXV's, ...) is decoded whole with plain autograd. Shown by
    wrapping the real tiny Wan VAE in a module of another class (no tiny HunyuanVideo VAE file is built here)."""

    class OtherVAE(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def decode(self, z):
            return self.inner.decode(z)

    wan = backend.vae.first_stage_model
    assert _walks(wan) and not _walks(OtherVAE(wan))
    want_frames, want_grad = _decode(backend, "checkpointed")
    backend.vae.first_stage_model = OtherVAE(wan)
    try:
        frames, grad = _decode(backend, "checkpointed")
    finally:
        backend.vae.first_stage_model = wan
    assert torch.allclose(frames, want_frames, atol=1e-6)
    assert torch.allclose(grad, want_grad, rtol=1e-4, atol=1e-5 * float(want_grad.abs().max()))


def test_frames_go_to_the_reward_device(backend):
    """ComfyUI's --cpu-vae (or a VAE on another GPU): the decoded frames must reach the device the reward models
    are held on. No second device exists on this CPU machine; the meta device stands in for it, which shows
    the target is the reward device and not the VAE's. That the gradient crosses a real CPU/GPU boundary
    only a GPU run shows (benchmarks/gpu_check.sh runs the tests there)."""
    autograd = pack_module("nodes.runtime.autograd")
    latent = torch.randn(1, 16, 3, 8, 8)
    settings = backend.settings
    with autograd.training_mode():
        backend.settings = dataclasses.replace(settings, reward_device="meta")
        try:
            out = backend.decode(latent, [0, 5])
        finally:
            backend.settings = settings
    assert out.device.type == "meta" and out.shape == (2, 64, 64, 3) and out.dtype == torch.float32
    assert backend.vae.device.type == "cpu"


@pytest.mark.parametrize("family", tiny_models.FAMILIES)
def test_trainer_node_adapter_gradient_is_the_plain_decodes(rt, family, monkeypatch):
    """Through the trainer node: the first step's adapter gradient with decode_gradient checkpointed (default)
    equals plain's (both tiny families decode with the tiny Wan VAE here)."""
    grads = {}

    def record(params, *args, _clip=torch.nn.utils.clip_grad_norm_, **kwargs):
        params = list(params)
        grads[mode] = [p.grad.detach().clone() for p in params]
        return _clip(params, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", record)
    for mode in ("plain", "checkpointed"):
        g, tr, *_ = train_graph(family, steps=1, run_name=f"decode_{family}_{mode}", decode_gradient=mode)
        g.capture(tr, "adapter")
        rt.run(g.nodes)
    assert sum(float(gr.abs().sum()) for gr in grads["plain"]) > 0
    for got, want in zip(grads["checkpointed"], grads["plain"], strict=True):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


def test_wan22_vae_walk_equals_its_own_decode(comfy, walked):
    """Wan 2.2's VAE (TI2V-5B; first_chunk on frame 0, unpatchify after) built tiny from ComfyUI's class with random
    weights (not through VAELoader: no tiny 2.2 VAE file is made here): the walk gives its decode's frames and
    gradient."""
    from comfy.ldm.wan.vae2_2 import WanVAE

    vae_decode = pack_module("nodes.runtime.vae_decode")
    torch.manual_seed(0)
    vae = WanVAE(dim=8, dec_dim=8, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=1, attn_scales=[],
                 temperal_downsample=[False, True, True], dropout=0.0)
    for p in vae.parameters():  # ComfyUI's layers skip their own init: set small random values
        torch.nn.init.normal_(p, std=0.05)
    frames = [0, 3, 9]  # latent frames 0, 1, 3 of 4

    def run(walk: bool):
        z = torch.randn(1, 48, 4, 4, 4, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
        with torch.inference_mode(False), torch.enable_grad():
            out = vae_decode.causal_vae_frames(vae, z, frames, "checkpointed") if walk else vae.decode(z)[:, :, frames]
            out.pow(2).sum().backward()
        return out.detach(), z.grad

    (want, want_grad), (got, grad) = run(False), run(True)
    assert got.shape == want.shape == (1, 3, 3, 64, 64) and want_grad.abs().sum() > 0
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(grad, want_grad, rtol=1e-4, atol=1e-5 * float(want_grad.abs().max()))


def test_cache_completion_gives_one_frame_entries_the_previous_frame_and_copies_views(comfy):
    """What the walk does after each pass on ComfyUI 0.33's Wan VAE (nodes/runtime/vae_decode.py), shown on a hand-made
    cache so it is checked on every version (0.3.75's layers leave nothing to complete: checked by the walk tests).
    Slots: a one-frame view after a tensor, a two-frame view, the upsampler's 'Rep' marker, an untouched entry."""
    complete = pack_module("nodes.runtime.vae_decode")._complete_cache
    activation = torch.arange(2 * 4.0).reshape(1, 1, 4, 1, 2)  # a layer's input: 4 frames
    previous = [torch.full((1, 1, 2, 1, 2), -1.0), torch.full((1, 1, 2, 1, 2), -2.0), None, torch.zeros(1, 1, 2, 1, 2)]
    cache = [activation[:, :, -1:], activation[:, :, -2:], "Rep", previous[3]]
    complete(previous, cache, 2)
    assert torch.equal(cache[0][:, :, 0], previous[0][:, :, -1]) and torch.equal(cache[0][:, :, 1], activation[:, :, 3])
    assert torch.equal(cache[1], activation[:, :, -2:]) and cache[1]._base is None, "a view pins the whole input"
    assert cache[2] == "Rep" and cache[3] is previous[3]
