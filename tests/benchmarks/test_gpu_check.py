"""benchmarks/gpu_check.sh in its reduced mode (tiny sizes, CPU, no test suite): it runs here and prints its table
with every row and finite numbers, so the script is known to work before a GPU runs it. Its numbers are not
checked (a benchmark, not a test); the full mode needs CUDA and is not run here."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.gpu_check.check import CPU_VAE_ROW, MODES, TRAIN_ROWS, sampling_labels

REPO = Path(__file__).resolve().parents[2]


def test_reduced_gpu_check_prints_every_row_with_finite_numbers():
    env = dict(os.environ, PYTHON=sys.executable, PERSONALVIDEO_COMFY_DEVICE="cpu")
    out = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--reduced"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    table = out.stdout.split("PersonalVideo GPU check (reduced)")[1].splitlines()
    steps = MODES["reduced"]["steps"]
    expected = [label for label, *_ in TRAIN_ROWS] + [CPU_VAE_ROW] + [label for label, *_ in sampling_labels(steps)]
    for label in expected:
        rows = [line for line in table if line.startswith(label)]
        assert len(rows) == 1, (label, table)
        seconds, peak, ratio = (float(v) for v in rows[0][len(label):].split()[:3])
        assert all(math.isfinite(v) and v > 0 for v in (seconds, peak, ratio)), rows[0]
        assert "no face" not in rows[0], rows[0]  # every training row ran a backward
    assert "test suite: skipped" in out.stdout
