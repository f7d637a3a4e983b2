"""What a workflow run must leave behind, checked on the files that run wrote: one video of finite, non-blank frames
that are the ones the graph decoded, and one adapter of trained LoRA pairs."""

from __future__ import annotations

from pathlib import Path

import torch


def files_under(folder: Path) -> dict[Path, int]:
    """{file: mtime} under ``folder``: taken before a run, it tells which files that run wrote (``written``)."""
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} if folder.exists() else {}


def written(before: dict[Path, int], folder: Path, pattern: str) -> list[Path]:
    """Files under ``folder`` matching ``pattern`` that are new or rewritten since ``before`` was taken."""
    return sorted(p for p, mtime in files_under(folder).items() if p.match(pattern) and before.get(p) != mtime)


def capture_saved_videos(prompt: dict) -> dict[str, str]:
    """Capture what each SaveAnimatedWEBP node is given (the decoded frames); {capture key: its filename_prefix}."""
    keys = {}
    for node_id, node in list(prompt.items()):
        if node["class_type"] == "SaveAnimatedWEBP":
            key = f"video_{node_id}"
            prompt[f"capture_{node_id}"] = {"class_type": "PersonalVideoDevCapture",
                                            "inputs": {"value": node["inputs"]["images"], "key": key}}
            keys[key] = node["inputs"]["filename_prefix"]
    return keys


def check_video(frames, files: list[Path], prompt: dict) -> None:
    """The run wrote one animated WEBP from finite, non-blank frames (for the Wan-VAE graphs, as many as the empty
    latent's length gives; other families' VAEs have their own frame rules: there, the decoded count)."""
    import numpy as np
    from PIL import Image, ImageSequence

    expected = frames.shape[0]
    lengths = [n["inputs"]["length"] for n in prompt.values() if n["class_type"] == "EmptyHunyuanLatentVideo"]
    if lengths:
        expected = (lengths[0] - 1) // 4 * 4 + 1  # the Wan VAE's 4k+1 frames
    assert frames.shape[0] == expected > 1 and torch.isfinite(frames).all(), (frames.shape, expected)
    assert len(files) == 1, f"the run must write one video, wrote {files}"
    with Image.open(files[0]) as video:
        pixels = np.stack([np.asarray(f.convert("RGB"), dtype=np.float32) for f in ImageSequence.Iterator(video)])
    assert pixels.shape == (expected, *frames.shape[1:3], 3), pixels.shape
    # Not blank: every frame has structure (NaN frames save as black; a tiny random model's frames vary by
    # tens of levels), and the file holds the frames the graph decoded. WEBP quality 90 is lossy on a random model's
    # pixel noise (mean error 0.059 per pixel measured) but keeps 8x8 block means (0.004 to 0.005 on noise frames
    # saved the same way); another frame's blocks differ by far more.
    assert pixels.reshape(expected, -1).std(axis=1).min() > 2.0, pixels.reshape(expected, -1).std(axis=1)
    blocks = [torch.nn.functional.avg_pool2d(torch.as_tensor(x, dtype=torch.float32).permute(0, 3, 1, 2), 8)
              for x in (pixels / 255.0, frames)]
    assert float((blocks[0] - blocks[1]).abs().mean()) < 0.02, float((blocks[0] - blocks[1]).abs().mean())


def check_adapter(files: list[Path]) -> None:
    """The run saved one adapter file: LoRA up/down pairs, finite, the down matrices non-zero and the up ones moved
    from their zero start by training."""
    from safetensors.torch import load_file

    assert len(files) == 1, f"the run must save one adapter, saved {files}"
    tensors = load_file(str(files[0]))
    ups = {k: v for k, v in tensors.items() if k.endswith(".lora_up.weight")}
    downs = {k: v for k, v in tensors.items() if k.endswith(".lora_down.weight")}
    assert ups and len(ups) == len(downs), sorted(tensors)[:6]
    assert all(torch.isfinite(v).all() for v in tensors.values())
    assert all(v.abs().sum() > 0 for v in downs.values()) and any(v.abs().sum() > 0 for v in ups.values())
