"""Seeded random weights for the tiny models of dev/tiny_models.py and dev/tiny_families.py (both use it)."""

from __future__ import annotations

import torch


def random_weights(module: torch.nn.Module, seed: int, std: float = 0.02) -> dict[str, torch.Tensor]:
    """Seeded random weights for ``module``'s state dict (norm scales 1, the rest normal with ``std``), float32."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, tensor in module.state_dict().items():
        if tensor.dtype.is_floating_point:
            parent = name.rsplit(".", 2)[-2] if name.count(".") else ""
            if name.endswith(("gamma", ".scale")) or ("norm" in parent and name.endswith(".weight")):
                value = torch.ones(tensor.shape)
            else:
                value = torch.randn(tensor.shape, generator=gen) * std
            sd[name] = value.to(torch.float32).contiguous()
        else:
            sd[name] = tensor.contiguous()
    return sd
