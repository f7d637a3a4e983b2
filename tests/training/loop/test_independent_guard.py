"""The reward-hacking guard: an independent recognizer watches both videos of every step, and the summary says
when the reward's recognizer gains while the independent one does not (toy backend; dlib runs in
tests/evaluation/test_dlib_face.py)."""

from __future__ import annotations

import math

import torch
from personalvideo.training.loop.records import StepRecord, TrainResult
from personalvideo.training.loop.summary import reward_hacking_check, summarize
from personalvideo.training.loop.trainer import Trainer
from toy_backend import make, toy_identity


def test_independent_recognizer_sees_both_videos_without_gradient_and_never_trains():
    s, params, backend, bank = make(steps=3)
    seen = []

    def independent(frames):
        seen.append((frames.requires_grad, torch.is_grad_enabled(), frames.shape))
        return float(frames.mean())

    watched = Trainer(backend, params, bank, s, toy_identity, independent_similarity=independent)
    history = watched.train().history
    assert len(seen) == 2 * 3 and not any(grad or enabled for grad, enabled, _ in seen)
    assert all(not math.isnan(r.independent_similarity) and not math.isnan(r.independent_source_similarity)
               for r in history)
    # watching changes nothing: the same run without it trains the same adapter, and records NaN
    s2, params2, backend2, bank2 = make(steps=3)
    unwatched = Trainer(backend2, params2, bank2, s2, toy_identity).train().history
    assert all(torch.equal(a, b) for a, b in zip(params.parameters(), params2.parameters()))
    assert all(math.isnan(r.independent_similarity) for r in unwatched)


def _rows(reward_tuned, reward_base, independent_tuned, independent_base, n=5):
    return [StepRecord(i, "p", 0.0, 0.0, 0.0, reward_tuned, reward_base, 0.0, "", independent_tuned,
                       independent_base) for i in range(n)]


def test_summary_flags_a_gain_only_the_reward_recognizer_sees():
    hacked = reward_hacking_check(_rows(0.60, 0.20, 0.31, 0.30))
    assert "+0.010" in hacked and "+0.400" in hacked and "WARNING" in hacked
    honest = reward_hacking_check(_rows(0.60, 0.20, 0.55, 0.30))
    assert "WARNING" not in honest
    small = reward_hacking_check(_rows(0.22, 0.20, 0.30, 0.30))  # too small a gain to judge
    assert "WARNING" not in small
    assert reward_hacking_check(_rows(0.6, 0.2, float("nan"), float("nan"))) is None
    text = summarize(TrainResult(history=_rows(0.60, 0.20, 0.31, 0.30)), make()[0], semantic_on=False)
    assert "independent recognizer" in text and "WARNING" in text


def test_summary_prints_a_kl_that_rounding_left_below_zero_as_zero():
    rows = [StepRecord(i, "p", 0.0, 0.0, -1e-9, 0.3, 0.3, 0.0) for i in range(5)]  # equal distributions
    assert "SCR: on, KL last fifth 0.0000\n" in summarize(TrainResult(history=rows), make()[0], semantic_on=True)
    rows = [StepRecord(i, "p", 0.0, 0.0, 0.0123, 0.3, 0.3, 0.0) for i in range(5)]
    assert "KL last fifth 0.0123" in summarize(TrainResult(history=rows), make()[0], semantic_on=True)
