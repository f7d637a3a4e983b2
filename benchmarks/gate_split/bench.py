"""Cost of placing a split sampler run in the whole schedule (nodes/runtime/gate_schedule.py), once per model / slice.

    .venv/bin/python -m benchmarks.gate_split.bench

Builds the candidate schedules for a Wan-like flow model (ModelSamplingSD3 shift 8, as the Wan 2.2 template
sets it) with a fresh ScheduleLocator, then resolves the two slices of the template (steps 0-10 and 10-20 of
20) for every scheduler. Both are cached: a graph pays them once per model_sampling object / distinct slice.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    from dev.comfy_runtime import ComfyRuntime

    ComfyRuntime.boot(Path(tempfile.mkdtemp(prefix="pv_gate_split_")), with_dev_nodes=False)
    import comfy.model_sampling as model_sampling
    import comfy.samplers as samplers

    from personalvideo.nodes.runtime.gate_schedule import ScheduleLocator as locator_cls

    class Flow(model_sampling.ModelSamplingDiscreteFlow, model_sampling.CONST):
        pass

    ms = Flow(None)
    ms.set_parameters(shift=8.0, multiplier=1000)
    locator = locator_cls()
    t = time.perf_counter()
    count = len(locator.schedules(ms))
    build = time.perf_counter() - t
    resolve = []
    for name in samplers.SCHEDULER_NAMES:
        full = samplers.calculate_sigmas(ms, name, 20)
        for window in (full[:11], full[10:]):
            t = time.perf_counter()
            locator.steps_gate_sigma(ms, window, 0.75, noise_added=False)
            resolve.append(time.perf_counter() - t)
    resolve.sort()
    print(f"candidate schedules: {count}, built in {build:.2f} s; slice resolution: median "
          f"{resolve[len(resolve) // 2]:.3f} s, max {resolve[-1]:.3f} s ({len(resolve)} slices)")


if __name__ == "__main__":
    main()
