"""training/adapter/gate.py: the step-gate rule, without ComfyUI."""

import pytest
import torch

from personalvideo.training.adapter.gate import first_gated_step, gate_is_open, step_gate_sigma


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
    gate_sigma = step_gate_sigma(sigmas, 0.75)
    opened = [gate_is_open(sigmas[i], gate_sigma) for i in range(8)]
    assert opened == [False] * 6 + [True] * 2
    # An intermediate evaluation inside step 5 (between sigma_5 and sigma_6) is still before the gate.
    assert not gate_is_open((sigmas[5] + sigmas[6]) / 2, gate_sigma)
    # A float16 round trip of sigma_6 must still count as step 6.
    assert gate_is_open(sigmas[6].half().float(), gate_sigma)


def test_never_and_always():
    sigmas = torch.linspace(14.6, 0.0, 11)
    assert step_gate_sigma(sigmas, 1.0) is None and not gate_is_open(sigmas[-2], None)
    always = step_gate_sigma(sigmas, 0.0)
    assert all(gate_is_open(s, always) for s in sigmas[:-1])


def test_a_window_is_gated_at_the_global_step_of_the_schedule_it_is_part_of():
    from personalvideo.training.adapter.gate import window_gate_sigma

    full = torch.linspace(1.0, 0.0, 21)  # 20 steps: the gate at step 15
    other = torch.linspace(0.9, 0.0, 21)  # shares no sigma sequence with ``full``
    status, gate_sigma, matches = window_gate_sigma(full[10:], [("a", full), ("b", other)], 0.75)
    assert status == "matched" and gate_sigma == float(full[15]) and matches == ["steps 10-20 of 20 (a)"]
    # The first half never reaches the gate; a window past the gate is gated from its first step.
    assert window_gate_sigma(full[:11], [("a", full)], 0.75)[:2] == ("matched", None)
    assert window_gate_sigma(full[16:], [("a", full)], 0.75)[:2] == ("matched", float(full[16]))
    # The step just after the window: its sigma (the window's last) is the gate, as in a whole run.
    assert window_gate_sigma(full[:16], [("a", full)], 0.75)[:2] == ("matched", float(full[15]))


def test_unmatched_and_ambiguous_windows_give_no_gate_sigma():
    from personalvideo.training.adapter.gate import window_gate_sigma

    full = torch.linspace(1.0, 0.0, 21)
    assert window_gate_sigma(torch.tensor([0.77, 0.5, 0.0]), [("a", full)], 0.75) == ("unmatched", None, [])
    # Two schedules that both contain the window but put the gate at different places in it.
    longer = torch.cat([torch.linspace(2.0, 1.05, 20), full])  # 40 steps: its gate (step 30) is full's step 10
    status, gate_sigma, matches = window_gate_sigma(full[5:], [("a", full), ("b", longer)], 0.75)
    assert status == "ambiguous" and gate_sigma is None and len(matches) == 2


@pytest.mark.parametrize("bad", ["late", float("nan"), None, 2])
def test_gate_start_check_names_the_value(bad):
    from personalvideo.training.adapter.gate import check_gate_start

    with pytest.raises(ValueError, match=r"gate_start: got .*expected a fraction in \[0, 1\]"):
        check_gate_start(bad)
