"""Out of memory in a training step, reported so that ComfyUI still treats it as out of memory.

ComfyUI's executor recognizes OOM by type (``isinstance(ex, comfy.model_management.OOM_EXCEPTION)``, which is
``torch.cuda.OutOfMemoryError`` = ``torch.OutOfMemoryError``) and then unloads every model, so the next prompt
starts on an empty card. A ``MemoryError`` or a plain ``RuntimeError`` skips that. So the trainer re-raises any
out-of-memory failure (CUDA's exception, the RuntimeError text of the CPU/MPS allocators, or a Python
``MemoryError``: what ComfyUI 0.33's DynamicVRAM allocator, comfy_aimdo, raises when its VRAM range runs out) as
``TrainingOutOfMemory``: a ``torch.OutOfMemoryError`` whose message names the settings to lower. This module
needs no ComfyUI import: the type is torch's own.
"""

from __future__ import annotations

import traceback

import torch


class TrainingOutOfMemory(torch.OutOfMemoryError):
    """Out of memory in a training step; still a ``torch.OutOfMemoryError`` (ComfyUI unloads models on it)."""


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError (comfy_aimdo: "VBAR OOM"), or an allocator's RuntimeError
    (CPU: "can't allocate memory"; MPS/HIP text)."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def release_failed_step(error: BaseException) -> None:
    """Drop the failed step's tensors (activations held by the finished frames of the traceback) right away,
    so the resume file is written and ComfyUI unloads models without them still on the card. The traceback
    text stays printable; only the frames' local variables go."""
    traceback.clear_frames(error.__traceback__)


def out_of_memory_error(error: BaseException, step: int, settings,
                        decode_gradient: str | None = None) -> TrainingOutOfMemory:
    """The error to raise instead of ``error``: names the step and the settings that lower memory, with their
    current values, and says where the work done so far is. ``decode_gradient``: the backend's decode mode,
    when it has one (the VAE decode with gradient is the peak for long clips)."""
    s = settings
    decode = "" if decode_gradient is None else (
        f" The VAE decode with gradient is the peak for long clips: keep decode_gradient (now {decode_gradient}) "
        "at checkpointed (exact), or set it to truncated (least memory, approximate gradient).")
    return TrainingOutOfMemory(
        f"out of memory at training step {step} ({type(error).__name__}: {str(error).strip()[:300]}). "
        f"Lower width/height/frames, frames_per_reward (now {s.frames_per_reward}) or sampling_steps (now "
        f"{s.sampling_steps}), set backprop_last_k (now {s.backprop_last_k}) to 1 or 2, turn checkpoint_blocks on, "
        f"or lower rank (now {s.rank}).{decode} The steps trained so far are in the run's resume file; run again with "
        "resume on to continue from it.")
