"""Two-expert models (Wan 2.2 A14B): which steps the high-noise expert samples, and where the gate may open.

The boundary is a fraction of the timestep range, as the official Wan 2.2 code uses it: a step belongs to the
high-noise expert when its timestep (for Wan: 1000·sigma, after the shift) is at least boundary·1000. Official T2V:
0.875; with shift 8 and 20 euler/simple steps that is step 11 (sigma_10 = 0.889 is still above 0.875). ComfyUI's
Wan 2.2 template split at step 10 at shift 8, which a boundary in (0.889, 0.907], e.g. 0.9, reproduces; where a
boundary lands depends on the shift and the step count (0.875 splits 20 steps at 9 at shift 5; 0.9 at 8). ComfyUI's
current template (shift 5) hands over at step 10 of 20 as a step number, the first KSamplerAdvanced's end_at_step,
so the node trainer also takes that number itself (expert_switch_step), which equals the graph's split at any
shift and step count.

The adapter trains on and applies to the low-noise expert only, so a gate start whose first gated step falls in
the high-noise steps is refused. Both trainers use these rules (nodes/runtime/expert_split.py on ComfyUI's model
sampling, scaleout/backends/flow_backend.py on the flow schedule), and the trainer checks its rollout with them.
"""

from __future__ import annotations

from typing import Iterable

from .gate import first_gated_step

DEFAULT_BOUNDARY = 0.875  # Wan 2.2 T2V A14B's official expert boundary (fraction of the timestep range)


def check_boundary(boundary) -> float:
    """``boundary`` as a float in (0, 1); ValueError naming ``expert_boundary`` otherwise."""
    try:
        value = float(boundary)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 < value < 1.0:  # also refuses NaN
        raise ValueError(f"expert_boundary: got {boundary!r}, expected a fraction of the timestep range in (0, 1) "
                         f"(Wan 2.2 T2V A14B: {DEFAULT_BOUNDARY})")
    return value


def boundary_step(timestep_fractions: Iterable[float], boundary: float) -> int:
    """b: how many leading steps belong to the high-noise expert, given each step's timestep as a fraction of the
    range (the schedule's sigmas without its final 0, through the model's timestep mapping)."""
    b = 0
    for fraction in timestep_fractions:
        if fraction < boundary:
            break
        b += 1
    return b


def describe_split(boundary: float | None = None, switch_step: int | None = None) -> str:
    """Where the split comes from, for messages and the summary: the switch step when one is set, else the boundary."""
    if switch_step:
        return f"expert_switch_step {switch_step}"
    return f"expert_boundary {boundary:g}" if boundary is not None else ""


def check_gate_after_boundary(gate_start: float, b: int, num_steps: int, boundary: float | None = None,
                              switch_step: int | None = None) -> None:
    """Refuse a gate start whose first gated step g = ceil(gate_start·N) falls in the high-noise expert's steps
    0..b-1 (the adapter acts on the low-noise expert only)."""
    g = first_gated_step(num_steps, gate_start)
    if g < b:
        split = describe_split(boundary, switch_step)
        where = f" ({split})" if split else ""
        raise ValueError(
            f"gate_start: got {gate_start:g}, which opens the gate at step {g} of {num_steps}, but steps 0-{b - 1} "
            f"belong to the high-noise expert{where}; the adapter trains on and applies to the low-noise expert "
            f"only. Expected gate_start >= {b / num_steps:g}: raise gate_start, or hand over earlier (a lower "
            "expert_switch_step, or a higher expert_boundary)")
