"""Peak memory while a ``with`` block runs, for the benchmarks: CUDA's max allocated, or the process's resident
set sampled every 2 ms on a thread (CPU)."""

from __future__ import annotations

import threading
import time


class Peak:
    """``mb``: the peak in MB during the block; ``rise_mb``: that peak minus what was in use when it began."""

    def __init__(self, cuda: bool = False):
        self.cuda, self.mb, self.rise_mb = cuda, float("nan"), float("nan")

    def __enter__(self) -> Peak:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._before = torch.cuda.memory_allocated()
            return self
        import psutil

        proc = psutil.Process()
        self._before = self._peak = proc.memory_info().rss
        self._stop = threading.Event()

        def watch():
            while not self._stop.is_set():
                self._peak = max(self._peak, proc.memory_info().rss)
                time.sleep(0.002)

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            peak = self._peak
        self.mb, self.rise_mb = peak / 2**20, (peak - self._before) / 2**20
