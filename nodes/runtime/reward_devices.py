"""The reward models on ComfyUI's devices: they are not ComfyUI models, so ComfyUI is asked to make room for them."""

from __future__ import annotations

import contextlib

import torch

import comfy.model_management as mm

# Room for activations beside the reward models' weights when making room on an accelerator.
ACTIVATION_MARGIN_BYTES = 1 << 30


def comfy_devices() -> tuple[torch.device, torch.device]:
    """(device the sampler runs on, device to keep idle models on), as ComfyUI decides them."""
    return mm.get_torch_device(), mm.unet_offload_device()


@contextlib.contextmanager
def reward_models_on(device, *holders):
    """The reward models (``DeviceHolder``s; None is skipped) on ``device`` while the context lasts.

    ComfyUI does not manage these modules, so first it is asked to free their size (plus a margin) on that
    device, offloading its own models as it would for a model of that size; otherwise moving ViT-H onto a
    card ComfyUI has filled would run out of memory.
    """
    device = torch.device(device)
    holders = [h for h in holders if h is not None]
    if device.type != "cpu":
        mm.free_memory(sum(h.size_bytes() for h in holders) + ACTIVATION_MARGIN_BYTES, device)
    with contextlib.ExitStack() as stack:
        for holder in holders:
            stack.enter_context(holder.on_device(device))
        yield
