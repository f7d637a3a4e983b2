"""Trainable LoRA parameters for the identity adapter, in ComfyUI's LoRA key format.

One (up [out, r], down [r, in]) pair per adapted 2-D weight, float32 whatever the base model's dtype.
``up`` starts at zero (as diffusers/PEFT do with B), so a fresh adapter changes nothing; ``down`` starts
small and random (seeded), so the first gradient step can move ``up``.
"""

from __future__ import annotations

import math

import torch


class LoRAParameters(torch.nn.Module):
    """The adapter being trained: ``W' = W + (alpha / rank) · up @ down`` for each weight key."""

    def __init__(self, shapes: dict[str, tuple[int, int]], rank: int, alpha: float, seed: int,
                 device: torch.device | str = "cpu"):
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank: got {rank}, expected >= 1")
        if not shapes:
            raise ValueError("LoRA targets: no 2-D weights matched; check the 'layers' setting")
        self.rank, self.alpha = int(rank), float(alpha)
        self.keys = sorted(shapes)
        gen = torch.Generator().manual_seed(seed)
        self.up = torch.nn.ParameterList()
        self.down = torch.nn.ParameterList()
        for key in self.keys:
            out_dim, in_dim = shapes[key]
            down = torch.randn(rank, in_dim, generator=gen) / math.sqrt(in_dim)
            self.down.append(torch.nn.Parameter(down.to(device)))
            self.up.append(torch.nn.Parameter(torch.zeros(out_dim, rank, device=device)))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def pairs(self) -> dict[str, tuple[torch.nn.Parameter, torch.nn.Parameter]]:
        """{weight key: (up, down)}."""
        return {k: (self.up[i], self.down[i]) for i, k in enumerate(self.keys)}

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """ComfyUI LoRA keys: ``<module>.lora_up.weight``, ``.lora_down.weight``, ``.alpha`` (CPU copies)."""
        return lora_state_dict(self.pairs(), self.alpha)

    def load_lora_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Inverse of ``lora_state_dict`` (for resume); raises ValueError on a mismatch."""
        load_lora_state_dict(self.pairs(), sd)


def lora_tensors(pairs: dict[str, tuple[torch.Tensor, torch.Tensor]],
                 alpha: float | dict[str, float]) -> dict[str, torch.Tensor]:
    """{module prefix: (up, down)} as ComfyUI LoRA tensors ``<prefix>.lora_up.weight`` / ``.lora_down.weight`` /
    ``.alpha`` (CPU float32 copies): the one writer of the key format, for the trainer's adapter and the scale-out
    exports. ``alpha``: one value, or one per prefix (a fused layer of n members has n·alpha)."""
    out = {}
    for prefix, (up, down) in pairs.items():
        out[f"{prefix}.lora_up.weight"] = up.detach().to("cpu", torch.float32).clone()
        out[f"{prefix}.lora_down.weight"] = down.detach().to("cpu", torch.float32).clone()
        out[f"{prefix}.alpha"] = torch.tensor(float(alpha[prefix] if isinstance(alpha, dict) else alpha))
    return out


def lora_state_dict(pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], alpha: float) -> dict[str, torch.Tensor]:
    """{weight key: (up, down)} as ComfyUI LoRA tensors (``lora_tensors`` of the keys without ``.weight``), shared by
    LoRAParameters and the scale-out trainer's peft view."""
    return lora_tensors({key.removesuffix(".weight"): pair for key, pair in pairs.items()}, alpha)


def load_lora_state_dict(pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], sd: dict[str, torch.Tensor]) -> None:
    """Copy ``lora_state_dict``'s tensors back into ``pairs`` (resume); ValueError on a mismatch (layers the run
    adapts that ``sd`` lacks, layers ``sd`` holds that the run does not adapt, other shapes)."""
    prefixes = {key[: -len(".weight")] for key in pairs}
    extra = sorted(k[: -len(".lora_up.weight")] for k in sd if k.endswith(".lora_up.weight")
                   and k[: -len(".lora_up.weight")] not in prefixes)
    if extra:
        raise ValueError(f"resume file: holds {len(extra)} layer(s) this run does not adapt (e.g. {extra[0]}); "
                         "it was made with other layers or another model; resume with the same layers and "
                         "model, or turn resume off")
    for key, (up, down) in pairs.items():
        prefix = key[: -len(".weight")]
        try:
            new_up, new_down = sd[f"{prefix}.lora_up.weight"], sd[f"{prefix}.lora_down.weight"]
        except KeyError as e:
            raise ValueError(f"resume file: no tensors for {prefix}; it was made with other layers or "
                             "another model; resume with the same layers and model, or turn resume off") from e
        if new_up.shape != up.shape or new_down.shape != down.shape:
            raise ValueError(f"resume file: {prefix} holds up {tuple(new_up.shape)} and down "
                             f"{tuple(new_down.shape)} (rank {new_down.shape[0]}), this run needs "
                             f"{tuple(up.shape)} and {tuple(down.shape)} (rank {down.shape[0]}); resume with the "
                             "same rank and model, or turn resume off")
        with torch.no_grad():
            up.copy_(new_up)
            down.copy_(new_down)
