"""A run's resume file: safetensors only (the adapter, the optimiser state as tensors, the step and the history as
JSON in the header), written atomically, so an interrupted run always leaves the last good state on disk. (The header
key ``personalvideo.checkpoint`` marks the format; it stays as written by earlier versions.)"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open

from ..adapter.lora import LoRAParameters
from ..atomic import save_safetensors_atomic
from .records import StepRecord, TrainResult

# Settings a resumed run must share with its resume file: other values would continue another experiment.
RESUME_MUST_MATCH = ("rank", "gate_start", "sampling_steps", "seed", "expert_boundary", "expert_switch_step")
NOT_A_RESUME_FILE_FIX = ("expected the resume file a training run writes there; use another run_name, move the file "
                         "away, or turn resume off")


def save_resume_file(path: Path, params: LoRAParameters, optimizer: torch.optim.Optimizer, step: int,
                    settings, result: TrainResult, extra: dict[str, str] | None = None) -> Path:
    """Write the run's state to ``path`` atomically (a crash mid-write leaves the previous file); ``extra`` are
    more header fields (str -> str)."""
    tensors = {f"adapter.{k}": v for k, v in params.lora_state_dict().items()}
    for pid, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            tensors[f"optim.{pid}.{name}"] = torch.as_tensor(value).detach().to("cpu", copy=True)  # no device alloc
    meta = {
        "personalvideo.checkpoint": "1",
        "step": str(step),
        "settings": json.dumps(asdict(settings)),
        "history": json.dumps([asdict(r) for r in result.history], allow_nan=True),
        "skipped_non_finite": str(result.skipped_non_finite),
        **(extra or {}),
    }
    return save_safetensors_atomic(path, tensors, meta)


def resume_file_history(path: Path) -> list[dict]:
    """The per-step records a resume file carries in its header (StepRecord fields), without loading its tensors."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        return json.loads((f.metadata() or {})["history"])


def load_resume_file(path: Path, params: LoRAParameters, optimizer: torch.optim.Optimizer, settings,
                    result: TrainResult) -> tuple[int, dict[str, str]]:
    """Restore the adapter, the optimiser state and ``result`` from ``path``; returns the step to continue at and
    the file's header (for the caller's own fields).

    Refuses a file that is not a resume file, or one trained with other ``RESUME_MUST_MATCH`` settings.
    """
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a file that is not safetensors
        raise ValueError(f"resume: {path} is not a PersonalVideo resume file (not a safetensors file: {e}); "
                         f"{NOT_A_RESUME_FILE_FIX}") from e
    if meta.get("personalvideo.checkpoint") != "1":
        raise ValueError(f"resume: {path} is not a PersonalVideo resume file (a safetensors file without the "
                         f"'personalvideo.checkpoint' header); {NOT_A_RESUME_FILE_FIX}")
    saved = json.loads(meta["settings"])
    for key in RESUME_MUST_MATCH:
        if saved.get(key) != getattr(settings, key):
            raise ValueError(f"resume: {path} was trained with {key}={saved.get(key)}, this run has "
                             f"{key}={getattr(settings, key)}; use the same value or turn resume off")
    params.load_lora_state_dict({k[len("adapter."):]: v for k, v in tensors.items() if k.startswith("adapter.")})
    device = next(params.parameters()).device
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v.to(device) if name != "step" else v
    opt = optimizer.state_dict()
    opt["state"] = state
    optimizer.load_state_dict(opt)
    result.history = [StepRecord(**r) for r in json.loads(meta["history"])]
    result.skipped_non_finite = int(meta.get("skipped_non_finite", 0))
    return int(meta["step"]), meta
