"""Run a job on 2 CPU processes with torchrun, as the scale-out tests do (gloo, one thread per process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_two_ranks(*args: str, timeout: int = 300) -> str:
    """``python -m torch.distributed.run --standalone --nproc_per_node 2 *args`` from the repository root; fails the
    test with the output's tail when it fails. It runs in its own process group, so a hang is ended with its
    workers. Returns what the job printed (stdout, then stderr)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stdout[-3000:] + stderr[-6000:]
    return stdout + stderr
