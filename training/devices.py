"""Keeping reward models cheap in a graph: stored on an offload device, moved only while used."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from .logs import pack_logger

log = pack_logger(__name__)


def half_dtype_for(device: torch.device | str) -> torch.dtype:
    """float32 on CPU/MPS; bfloat16 on CUDA when supported, else float16."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def to_reward_device(frames: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Decoded frames moved (differentiably) to the device the reward models run on, in float32.

    The VAE may decode elsewhere than the rewards run (ComfyUI's ``--cpu-vae``, a VAE on another GPU); a
    reward model held on its device for forward and backward (``DeviceHolder.on_device``) refuses frames
    from another one. The move is part of the graph: the gradient returns to the VAE's device in backward.
    """
    device = torch.device(device)
    if frames.device == device or _same_device(frames.device, device):
        return frames.float()
    return frames.to(device=device, dtype=torch.float32)


class DeviceHolder:
    """Owns a frozen module that lives on ``offload_device`` and visits ``load_device`` while used.

    ``with holder.on_device():`` moves it (re-entrant: nested uses move it once) and moves it back on
    exit, so a graph can keep several reward models around without holding accelerator memory.
    """

    def __init__(self, module: nn.Module, load_device: torch.device | str = "cpu",
                 offload_device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.module = module.to(device=offload_device, dtype=dtype).eval().requires_grad_(False)
        self.load_device = torch.device(load_device)
        self.offload_device = torch.device(offload_device)
        self.dtype = dtype
        self._depth = 0
        self._current = self.offload_device

    @property
    def device(self) -> torch.device:
        """Where the module is right now."""
        return self._current if self._depth else self.offload_device

    @contextlib.contextmanager
    def on_device(self, device: torch.device | str | None = None) -> Iterator[nn.Module]:
        """Context in which the module sits on ``device`` (default: its load device).

        Re-entrant: an inner use (with the same device or none) does not move it again, so a caller that
        needs the weights to stay put across forward *and* backward (the trainer) wraps both in one outer
        use. ``load_device`` itself never changes.
        """
        target = torch.device(device) if device is not None else self.load_device
        if self._depth == 0:
            if target != self.offload_device:
                self.module.to(target)
            self._current = target
        elif device is not None and not _same_device(target, self._current):
            raise ValueError(f"reward model: already in use on {self._current}, asked for {target}; expected the "
                             "same device (or none) inside an outer use; move it only once the outer use ends")
        self._depth += 1
        try:
            yield self.module
        finally:
            self._depth -= 1
            if self._depth == 0 and self._current != self.offload_device:
                self.module.to(self.offload_device)
                if self._current.type == "cuda":
                    torch.cuda.empty_cache()

    def size_bytes(self) -> int:
        """Memory the module needs on its load device."""
        return sum(t.numel() * t.element_size() for t in [*self.module.parameters(), *self.module.buffers()])


def _same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:0`` name the same device when the index is left out."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)
