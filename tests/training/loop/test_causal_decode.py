"""training/loop/causal_decode.py on a toy causal decoder written here (plain torch; the real Wan VAE is checked in
tests/nodes/test_decode_gradient.py): a per-frame layer whose cache carries the previous frame's features, like
Wan's feat_cache, including a non-tensor marker on the first frame."""

from __future__ import annotations

import pytest
import torch
from personalvideo.training.latent_geometry import latent_frame_of
from personalvideo.training.loop.causal_decode import causal_decode, select_frames


def toy(latent: torch.Tensor, weight: torch.Tensor):
    def step(i, cache):
        prev = cache[0]
        h = torch.tanh(latent[:, :, i:i + 1] * weight)
        if isinstance(prev, torch.Tensor):
            h = h + 0.5 * torch.sin(prev)
        cache[0] = h if i else "Rep"  # first frame: a marker, as Wan's upsampler writes
        if i:
            cache[1] = h * 2
        return h.repeat(1, 1, 1 if i == 0 else 4, 1, 1)

    return step


@pytest.mark.parametrize("mode", ["checkpointed", "truncated"])
def test_same_frames_as_plain_and_the_gradient_each_mode_promises(mode):
    gen = torch.Generator().manual_seed(0)
    latent0 = torch.randn(1, 2, 5, 3, 3, generator=gen)
    weight0 = torch.randn(1, 2, 1, 3, 3, generator=gen)
    frames = [0, 6, 16]  # latent frames 0, 2, 4

    def run(m):
        latent, weight = latent0.clone().requires_grad_(True), weight0.clone().requires_grad_(True)
        out = select_frames(causal_decode(toy(latent, weight), 5, 2, {0, 2, 4}, m), frames)
        out.pow(2).sum().backward()
        return out.detach(), latent.grad, weight.grad

    plain, got = run("plain"), run(mode)
    assert got[0].shape == (1, 2, 3, 3, 3) and torch.equal(got[0], plain[0])
    if mode == "checkpointed":
        assert torch.allclose(got[1], plain[1], atol=1e-6) and torch.allclose(got[2], plain[2], atol=1e-6)
    else:
        assert got[1][:, :, [1, 3]].abs().sum() == 0 and plain[1][:, :, [1, 3]].abs().sum() > 0
        assert torch.allclose(got[1][:, :, 4], plain[1][:, :, 4], atol=1e-6)


def test_frames_map_to_latent_frames_and_a_bad_mode_is_named():
    assert [latent_frame_of(f) for f in (0, 1, 4, 5, 8, 9)] == [(0, 0), (1, 0), (1, 3), (2, 0), (2, 3), (3, 0)]
    with pytest.raises(ValueError, match="decode_gradient: got 'fast'"):
        causal_decode(lambda i, c: torch.zeros(1), 1, 1, {0}, "fast")
