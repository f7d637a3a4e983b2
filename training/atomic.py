"""Atomic file writes: a temporary file in the target's folder, then a rename over the target.

An interrupted or failed write leaves the previous file (if any) intact and no partial file behind. Every file the
trainers write goes through here: adapters, resume files, and the scale-out command's chart and summary.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """``write(tmp)`` writes the file's content to the path ``tmp`` (next to ``path``), which then replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_safetensors_atomic(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                            metadata: dict[str, str]) -> Path:
    """``tensors`` (moved to the CPU, contiguous) and ``metadata`` as a safetensors file, written atomically."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return write_atomic(path, lambda tmp: save_file(cpu, tmp, metadata=metadata))
