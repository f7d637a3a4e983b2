"""training/adapter/gate.py: the step-gate rule, without ComfyUI."""

import pytest
import torch

from PersonalVideo.training.adapter.gate import first_gated_step, gate_is_open, step_gate_sigma


@pytest.mark.parametrize("n,start,expected", [(20, 0.75, 15), (8, 0.75, 6), (10, 0.75, 8), (30, 0.75, 23),
                                              (4, 0.0, 0), (4, 1.0, 4), (1, 0.75, 1), (0, 0.75, 0),
                                              (3, 0.5, 2), (100, 0.01, 1)])
def test_first_gated_step_is_ceil_of_start_times_n(n, start, expected):
    assert first_gated_step(n, start) == expected


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_start_outside_unit_interval_is_refused(bad):
    with pytest.raises(ValueError, match="gate_start"):
        first_gated_step(10, bad)


def test_gate_opens_exactly_from_step_g_on():
    sigmas = torch.linspace(1.0, 0.0, 9)  # 8 steps
    threshold = step_gate_sigma(sigmas, 0.75)
    opened = [gate_is_open(sigmas[i], threshold) for i in range(8)]
    assert opened == [False] * 6 + [True] * 2
    # An intermediate evaluation inside step 5 (between sigma_5 and sigma_6) is still before the gate.
    assert not gate_is_open((sigmas[5] + sigmas[6]) / 2, threshold)
    # A float16 round trip of sigma_6 must still count as step 6.
    assert gate_is_open(sigmas[6].half().float(), threshold)


def test_never_and_always():
    sigmas = torch.linspace(14.6, 0.0, 11)
    assert step_gate_sigma(sigmas, 1.0) is None and not gate_is_open(sigmas[-2], None)
    always = step_gate_sigma(sigmas, 0.0)
    assert all(gate_is_open(s, always) for s in sigmas[:-1])
