"""Interleaved timing for the sampling benchmarks (gate_overhead, fp8_scaled_gate): every variant runs in one
process and one ComfyUI, round by round. Each timed run follows an untimed run of the same variant, which pays for
switching ComfyUI's loaded model to that variant (re-patching weights for a LoRA); a user sampling the same graph
again does not pay it. Reported: the median seconds per run and its ratio to the base variant."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def median_seconds(variants: list[str], run: Callable[[str, int], None], repeats: int) -> dict[str, float]:
    """``run(variant, seed)`` runs one graph; returns each variant's median timed seconds over ``repeats`` rounds."""
    times = {v: [] for v in variants}
    for v in variants:  # warm-up: load and cache everything upstream of the sampler
        run(v, 0)
    for r in range(repeats):
        for v in variants:
            run(v, 1000 + r)  # switch the loaded model to v
            t0 = time.perf_counter()
            run(v, r + 1)
            times[v].append(time.perf_counter() - t0)
    return {v: statistics.median(t) for v, t in times.items()}


def ratio_table(medians: dict[str, float], base: str = "base") -> str:
    width = max(len(v) for v in medians) + 2
    lines = [f"{'variant':<{width}} {'median s':>9} {'vs base':>8}"]
    lines += [f"{v:<{width}} {m:9.3f} {m / medians[base]:8.3f}" for v, m in medians.items()]
    return "\n".join(lines)
