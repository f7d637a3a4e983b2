"""Trainer.generate on the last part of a schedule (two-expert models): the gate counts the whole sampling's steps.

Plain torch with the toy model and euler of toy_backend.py (stand-ins; the real two-expert run against ComfyUI's
Wan 2.2 template is tests/nodes/test_trainer_a14b.py).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from personalvideo.training.adapter.lora import LoRAParameters
from personalvideo.training.loop.trainer import Trainer, TrainSettings
from toy_backend import C, H, T, W, ToyModel, euler_sample


def _generate(gate_start, split, steps=20):
    params = LoRAParameters({"lin.weight": (C, C)}, 2, 2.0, seed=0)
    model = ToyModel(params)
    full = torch.linspace(1.0, 0.0, steps + 1)
    holder = SimpleNamespace(settings=TrainSettings(gate_start=gate_start))
    x = torch.randn(1, C, T, H, W, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = Trainer.generate(holder, lambda lat, s, on: model.denoise(lat, s, on), euler_sample(full[split:]), x,
                               full[split:], full_sigmas=full)
    return out, model.calls


def test_gate_opens_at_the_global_step_of_the_whole_schedule():
    out, calls = _generate(0.75, split=10)
    # steps 15-19 of 20 are gated (counting in the 10-step slice would gate from its step 8 = global 18)
    assert out.gated_calls == 5
    tuned = [s for s, on in calls if on]
    assert tuned == pytest.approx([0.25, 0.2, 0.15, 0.1, 0.05])


def test_a_gate_before_the_slice_is_refused():
    with pytest.raises(ValueError, match=r"gate_start: got 0\.4, which opens the gate at step 8 of 20, but steps "
                                         r"0-9 belong to the high-noise expert"):
        _generate(0.4, split=10)
    out, _ = _generate(0.5, split=10)  # the slice's first step may be gated
    assert out.gated_calls == 10
