"""peft's LoRA on a diffusers model, seen by the trainer as ``training.adapter.lora.LoRAParameters``.

peft owns the weights (``lora_A`` = the pack's ``down`` [r, in], ``lora_B`` = ``up`` [out, r], scale alpha / r);
this view names them by the caller's keys (for Wan: ComfyUI's native weight names, so resume files and gradients
line up with the node side) and initialises them by the pack's rule: for each key in sorted order, down drawn
from one generator seeded ``seed`` (randn / sqrt(in)), up zero. Same keys, shapes and seed give the node's
LoRAParameters exactly.

The gate: ``set_enabled(on)`` switches peft's adapter on every adapted layer per model call
(``enable_adapters``, which also flips the adapter weights' ``requires_grad``: set back here, the trainer's
optimizer and gradient checks need them trainable). ``recompute_state(block)`` captures a block's switch at
forward time for block checkpointing (training/loop/block_checkpoint.py): backward recomputes the block with the
adapter it ran with, not the one switched on at backward time.
"""

from __future__ import annotations

import contextlib
import math
import re

import torch

from ..training.adapter.lora import load_lora_state_dict, lora_state_dict

ADAPTER = "identity"


class PeftLoRA(torch.nn.Module):
    """The adapter being trained: peft's weights in ``model`` under the names ``targets`` maps them to."""

    def __init__(self, model: torch.nn.Module, targets: dict[str, str], rank: int, alpha: float, seed: int):
        """``targets``: {module name in ``model``: the key it is known by (ends in ``.weight``)}."""
        from peft import LoraConfig, inject_adapter_in_model

        super().__init__()
        if rank < 1:
            raise ValueError(f"rank: got {rank}, expected >= 1")
        if not targets:
            raise ValueError("LoRA targets: no linear layers matched; check the 'layers' setting")
        self.rank, self.alpha = int(rank), float(alpha)
        pattern = "^(" + "|".join(re.escape(name) for name in sorted(targets)) + ")$"
        config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=pattern, lora_dropout=0.0,
                            init_lora_weights=True, bias="none")
        inject_adapter_in_model(config, model, adapter_name=ADAPTER)
        self.module_of = {key: name for name, key in targets.items()}
        self.keys = sorted(self.module_of)
        modules = dict(model.named_modules())
        self.layers = {key: modules[self.module_of[key]] for key in self.keys}  # plain dict: not submodules
        gen = torch.Generator().manual_seed(seed)
        # on an empty model (parameters on meta: FSDP2's load, scaleout/distributed.py) these writes store
        # nothing; the weights then come from rank 0's copy, which drew the same numbers here
        with torch.no_grad():
            for key in self.keys:  # float32 whatever the base model's dtype, as LoRAParameters
                self.layers[key].lora_A[ADAPTER].float()
                self.layers[key].lora_B[ADAPTER].float()
                up, down = self._pair(key)
                in_dim = down.shape[1]
                down.copy_(torch.randn(rank, in_dim, generator=gen) / math.sqrt(in_dim))
                up.zero_()
        self.set_enabled(True)

    def _pair(self, key: str) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
        layer = self.layers[key]
        return layer.lora_B[ADAPTER].weight, layer.lora_A[ADAPTER].weight

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def pairs(self) -> dict[str, tuple[torch.nn.Parameter, torch.nn.Parameter]]:
        """{key: (up, down)}."""
        return {key: self._pair(key) for key in self.keys}

    def module_pairs(self) -> dict[str, tuple[torch.nn.Parameter, torch.nn.Parameter]]:
        """{module name in the diffusers model: (up, down)} (what the exports rename or fuse)."""
        return {self.module_of[key]: self._pair(key) for key in self.keys}

    def parameters(self, recurse: bool = True):
        """Every up, then every down, in key order (LoRAParameters' order: optimizer states line up)."""
        pairs = [self._pair(k) for k in self.keys]
        yield from (up for up, _ in pairs)
        yield from (down for _, down in pairs)

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        return lora_state_dict(self.pairs(), self.alpha)

    def load_lora_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Inverse of ``lora_state_dict`` (resume); ValueError on a mismatch."""
        load_lora_state_dict(self.pairs(), sd)

    # -- the gate ----------------------------------------------------------------------------------
    def set_enabled(self, on: bool, layers=None) -> None:
        for layer in (self.layers.values() if layers is None else layers):
            if layer.disable_adapters == on:  # peft's flag: True = off
                layer.enable_adapters(on)
            for p in (layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight):
                p.requires_grad_(True)

    def recompute_state(self, block: torch.nn.Module):
        """The switch of ``block``'s adapted layers now, as a context-manager factory that re-creates it."""
        inside = {id(m) for m in block.modules()}
        snapshot = [(layer, not layer.disable_adapters) for layer in self.layers.values() if id(layer) in inside]

        @contextlib.contextmanager
        def restore():
            current = [(layer, not layer.disable_adapters) for layer, _ in snapshot]
            for layer, on in snapshot:
                self.set_enabled(on, [layer])
            try:
                yield
            finally:
                for layer, on in current:
                    self.set_enabled(on, [layer])

        return restore
