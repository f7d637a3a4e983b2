"""Identity adapter files: ordinary ComfyUI LoRA safetensors plus the pack's fields in the header.

Keys are ComfyUI's LoRA format (``diffusion_model.<module>.lora_up.weight`` / ``.lora_down.weight`` /
``.alpha``), so core ``LoraLoaderModelOnly`` and ``CreateHookLoraModelOnly`` read the same file. The pack's
own fields live in the safetensors metadata (str -> str) under ``personalvideo.*``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..atomic import save_safetensors_atomic
from ..version import pack_version
from .gate import check_gate_start

FORMAT_VERSION = "1"
META_PREFIX = "personalvideo."
# Which expert of a two-expert model (Wan 2.2 A14B: high-noise / low-noise) an adapter belongs to; "" = not
# known or a one-model family.
EXPERTS = ("", "high_noise", "low_noise")
# Suffixes of keys that ComfyUI's LoRA loader understands (LoRA, LoCon/LyCORIS, PEFT, full diffs).
LORA_KEY_SUFFIXES = (
    ".lora_up.weight", ".lora_down.weight", ".lora_mid.weight", ".alpha", ".lora_A.weight",
    ".lora_B.weight", ".lora.up.weight", ".lora.down.weight", ".lora_linear_layer.up.weight",
    ".lora_linear_layer.down.weight", ".diff", ".diff_b", ".hada_w1_a", ".hada_w1_b", ".hada_w2_a",
    ".hada_w2_b", ".lokr_w1", ".lokr_w2", ".lokr_w1_a", ".lokr_w1_b", ".lokr_w2_a", ".lokr_w2_b",
    ".dora_scale", ".w_norm", ".b_norm", ".set_weight", ".reshape_weight", ".oft_blocks", ".oft_diag",
)


class IdentityAdapter(dict):
    """A LoRA state dict (what core calls ``LORA_MODEL``) that also carries its metadata and source.

    Being a plain dict of tensors, it flows into core nodes that take ``LORA_MODEL`` unchanged.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None,
                 source: str = "adapter"):
        super().__init__(tensors)
        self.metadata = dict(metadata or {})
        self.source = source


def recorded_gate_start(adapter) -> float | None:
    """The gate start an adapter records (``personalvideo.gate_start``), or None (e.g. core's LORA_MODEL, a
    community LoRA). ValueError naming the adapter for a value that is not a fraction in [0, 1]."""
    raw = (getattr(adapter, "metadata", None) or {}).get(META_PREFIX + "gate_start", "")
    if str(raw).strip() == "":
        return None
    source = getattr(adapter, "source", "adapter")
    try:
        return check_gate_start(raw)
    except ValueError:
        raise ValueError(f"identity adapter {source}: its header says personalvideo.gate_start = {raw!r}, expected "
                         "a fraction in [0, 1]; save the adapter again, or turn override_gate_start on and set "
                         "gate_start") from None


def recorded_expert(adapter) -> str:
    """The expert an adapter records (``personalvideo.expert``: "high_noise", "low_noise"), "" when unknown."""
    return str((getattr(adapter, "metadata", None) or {}).get(META_PREFIX + "expert", "")).strip()


def is_lora_key(key: str) -> bool:
    return key.endswith(LORA_KEY_SUFFIXES)


def rank_and_alpha(tensors: dict[str, torch.Tensor]) -> tuple[int | None, float | None]:
    """Rank and alpha of the first LoRA pair found (None when the file has no LoRA pairs)."""
    for key in sorted(tensors):
        if key.endswith(".lora_down.weight"):
            prefix = key[: -len(".lora_down.weight")]
            rank = int(tensors[key].shape[0])
            alpha = tensors.get(prefix + ".alpha")
            return rank, float(alpha) if alpha is not None else float(rank)
    return None, None


def validate_lora(tensors: dict[str, torch.Tensor], source: str) -> None:
    """Raise ValueError naming ``source`` unless it holds LoRA keys ComfyUI can load."""
    if not tensors:
        raise ValueError(f"identity adapter {source}: the file holds no tensors; pick a LoRA file")
    lora_keys = [k for k in tensors if is_lora_key(k)]
    if not lora_keys:
        sample = ", ".join(sorted(tensors)[:3])
        raise ValueError(
            f"identity adapter {source}: not a LoRA file ({len(tensors)} tensors, none with LoRA keys "
            f"such as '.lora_up.weight'/'.lora_down.weight'; first keys: {sample}). It looks like a whole "
            "model file or another kind of file; pick a LoRA saved by PersonalVideo or a LoRA trainer."
        )


def build_metadata(tensors: dict[str, torch.Tensor], gate_start: float, base_model: str | None,
                   extra: dict[str, str] | None = None, expert: str = "") -> dict[str, str]:
    """The pack's header fields of an adapter file (``personalvideo.*``; the version is pyproject's)."""
    if expert not in EXPERTS:
        raise ValueError(f"expert: got {expert!r}, expected one of {EXPERTS} ('' = unknown); choose one with the "
                         "Save node's expert input")
    rank, alpha = rank_and_alpha(tensors)
    meta = {
        META_PREFIX + "format": FORMAT_VERSION,
        META_PREFIX + "version": pack_version(),
        META_PREFIX + "gate_start": f"{gate_start:g}",
        META_PREFIX + "rank": "" if rank is None else str(rank),
        META_PREFIX + "alpha": "" if alpha is None else f"{alpha:g}",
        META_PREFIX + "base_model": base_model or "",
        META_PREFIX + "expert": expert,
    }
    for k, v in (extra or {}).items():
        meta[META_PREFIX + k] = str(v)
    return meta


def save_adapter(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Check that ``tensors`` is a LoRA ComfyUI can load, then write it atomically."""
    validate_lora(tensors, str(path))
    return save_safetensors_atomic(path, tensors, metadata)


def load_adapter(path: str | os.PathLike, display_name: str | None = None) -> IdentityAdapter:
    """Read a LoRA safetensors file; ValueError naming the file for corrupt or non-LoRA files."""
    path = Path(path)
    name = display_name or path.name
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"identity adapter {name}: expected a .safetensors file (pickled .pt/.ckpt files "
                         "are not loaded: they can run code); convert it to safetensors")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"identity adapter {name}: cannot read it as safetensors ({e}); the file is "
                         "truncated or corrupt: save or download it again") from e
    validate_lora(tensors, name)
    return IdentityAdapter(tensors, metadata, source=name)
