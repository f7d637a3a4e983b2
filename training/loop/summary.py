"""A short text summary of a training run (the trainer node's STRING output)."""

from __future__ import annotations

import math

from .records import StepRecord, TrainResult


def _mean(rows: list[StepRecord], attr: str) -> float:
    values = [getattr(r, attr) for r in rows if not math.isnan(getattr(r, attr))]
    return sum(values) / len(values) if values else float("nan")


# The guard's rule: the reward's recognizer sees a clear gain of the tuned over the source video on the same draws,
# and the independent recognizer sees less than this share of it (cosines of both are on comparable scales: same
# person well above different people; tests/evaluation/test_dlib_face.py measures both under pixel attacks).
REWARD_GAIN_WORTH_CHECKING = 0.05
INDEPENDENT_SHARE_BELOW = 0.25


def reward_hacking_check(rows: list[StepRecord]) -> str | None:
    """One line comparing the reward recognizer's gain of the tuned over the source video with the independent one's,
    on the same draws; None when no independent recognizer was connected."""
    independent = _mean(rows, "independent_similarity") - _mean(rows, "independent_source_similarity")
    if math.isnan(independent):
        return None
    reward = _mean(rows, "similarity") - _mean(rows, "source_similarity")
    line = (f"independent recognizer (last fifth, tuned - source on the same draws): {independent:+.3f}; "
            f"reward recognizer: {reward:+.3f}")
    if reward > REWARD_GAIN_WORTH_CHECKING and independent < INDEPENDENT_SHARE_BELOW * reward:
        line += (" -> WARNING: the reward's recognizer gains, the independent one does not: possible reward "
                 "hacking (faces that fool the reward without looking more alike); lower learning_rate or steps, "
                 "keep scr_weight on, and check the videos")
    return line


def summarize(result: TrainResult, settings, semantic_on: bool, adapted: str | None = None) -> str:
    """The run in a few lines: steps, face similarity first -> last fifth against the source video, no-face rate,
    SCR, the settings that shape the run and ``adapted`` (which layers the adapter has, when known)."""
    done = [r for r in result.history if not r.skipped]
    first = result.history[: max(1, len(result.history) // 5)]
    last = result.history[-max(1, len(result.history) // 5):]
    # the KL is >= 0; float rounding leaves about -1e-9 where the two distributions are equal ("-0.0000")
    scr = f"on, KL last fifth {max(_mean(last, 'scr_loss'), 0.0):.4f}" if semantic_on else \
        "off (no semantic reward model connected, or scr_weight 0)"
    lines = [
        f"{len(result.history)} steps ({len(done)} updated the adapter; {result.skipped_non_finite} skipped for "
        f"NaN/Inf; resumed from step {result.resumed_from})",
        f"face similarity (tuned model): first fifth {_mean(first, 'similarity'):.3f} -> last fifth "
        f"{_mean(last, 'similarity'):.3f}; source video (frozen model) on the same draws: "
        f"{_mean(last, 'source_similarity'):.3f}",
        f"no-face rate (last fifth): {_mean(last, 'no_face_rate'):.2f}",
        f"SCR: {scr}",
        *filter(None, [reward_hacking_check(last)]),
        f"gate start {settings.gate_start}, {settings.sampling_steps} sampling steps ({settings.sampler}, "
        f"{settings.scheduler}), rank {settings.rank}, lr {settings.learning_rate:g}",
        *filter(None, [adapted]),
    ]
    return "\n".join(lines)
