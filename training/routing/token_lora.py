"""The LoRA in activation space with a weight per token: ``out + sum_i w_i[token] * s_i * up_i(down_i(x))``.

The gated apply node adds ``s * up @ down`` to the weight (one merged matmul per layer, cheapest for one identity).
A weight per token cannot be expressed in weight space, so routing computes each adapter's low-rank path on the
activations: ``h = x @ down^T`` (rank r, small), scaled per token by ``w * s`` (scaling the rank-r rows is the same
as scaling the output rows, and cheaper), then ``out += h @ up^T``. Outside inference the add is out of place (so
autograd sees it, for training with a region mask); in inference it is an in-place ``addmm_`` on the layer's own
output, so a routed layer needs no output-sized temporary however many identities there are.

Equalities this gives (float32): a token of weight 0 keeps ``out`` bit for bit (its ``h`` row is exactly 0); a token
of weight 1 for one adapter and 0 for the others gets exactly that adapter's single-adapter output; against the
weight-space merge ``x @ (W + s up down)^T`` an all-ones weight differs by float rounding only (the sums run in
another order: ``W x + s up (down x)`` rather than ``(W + s up down) x``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LowRankPair:
    """One adapter's pair on one layer: ``up`` [out, r], ``down`` [r, in], ``scale`` = strength * alpha / r."""

    up: torch.Tensor
    down: torch.Tensor
    scale: float
    _cast: dict = field(default_factory=dict, repr=False)

    def on(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(up, down) on ``device`` in ``dtype``: cached for frozen adapters (one copy per device and dtype, made
        once per sampling), differentiable casts for trained ones."""
        if self.up.requires_grad or self.down.requires_grad:
            return self.up.to(device, dtype), self.down.to(device, dtype)
        key = (device, dtype)
        if key not in self._cast:
            self._cast[key] = (self.up.to(device, dtype), self.down.to(device, dtype))
        return self._cast[key]

    def release(self) -> None:
        self._cast.clear()


def add_routed_lora(out: torch.Tensor, x: torch.Tensor, pairs: list[LowRankPair],
                    token_weights: list[torch.Tensor | None]) -> torch.Tensor:
    """``out`` [B, L, O] (the layer's output for input ``x`` [B, L, I]) plus each pair's LoRA path weighted per token
    by ``token_weights[i]`` [B, L] (None: that adapter acts on no token of this call and costs nothing)."""
    if len(pairs) != len(token_weights):
        raise ValueError(f"token_weights: got {len(token_weights)}, expected one per adapter ({len(pairs)})")
    recording = torch.is_grad_enabled() and (out.requires_grad or x.requires_grad or any(
        p.up.requires_grad or p.down.requires_grad for p in pairs))
    # inference tensors (ComfyUI samples under inference_mode) may be updated in place only inside inference mode
    in_place = (not recording and out.is_contiguous()
                and (not out.is_inference() or torch.is_inference_mode_enabled()))
    result = out
    for pair, weight in zip(pairs, token_weights):
        if weight is None:
            continue
        if weight.shape != out.shape[:2]:
            raise ValueError(f"token_weights: got shape {list(weight.shape)}, expected {list(out.shape[:2])} "
                             "(batch, tokens) of this layer's input")
        up, down = pair.on(x.device, x.dtype)
        h = (x @ down.T) * (weight.to(x.device, torch.float32) * pair.scale).to(x.dtype).unsqueeze(-1)
        flat_h = h.reshape(-1, h.shape[-1]).to(out.dtype)
        up = up.to(out.dtype)
        if in_place:
            result.view(-1, result.shape[-1]).addmm_(flat_h, up.T)
        else:
            result = torch.addmm(result.reshape(-1, result.shape[-1]), flat_h, up.T).reshape(result.shape)
    return result
