"""The gradient of a training step: loss scaling for fp16 compute, and layers the gradient does not reach.

fp16 (cards without bf16, ComfyUI's ``--fp16-unet`` / ``--fp16-vae``): the backward pass runs through fp16
activations, whose smallest value is 6e-8; smaller gradients flush to zero and the adapter silently stops
learning. Dynamic loss scaling (what ``torch.amp.GradScaler`` does; written out here so that its state is two
numbers in the resume file and any device works) multiplies the loss by a large scale before backward and
divides the adapter's float32 gradients by it afterwards. A step whose scaled gradient overflows is skipped
(the trainer's non-finite rule) and the scale halves; after ``growth_interval`` good steps it doubles.
"""

from __future__ import annotations

import torch


class LossScale:
    """Dynamic loss scale; with ``enabled`` False it is the identity (scale 1, never changes)."""

    def __init__(self, enabled: bool, init_scale: float = 2.0**16, growth_interval: int = 100):
        self.enabled = enabled
        self.scale = float(init_scale) if enabled else 1.0
        self.growth_interval = growth_interval
        self.good_steps = 0

    def scaled(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale if self.enabled else loss

    def unscale(self, params) -> bool:
        """Divide the gradients by the scale; False (and the scale halves) when any is not finite."""
        grads = [p.grad for p in params if p.grad is not None]
        finite = all(bool(torch.isfinite(g).all()) for g in grads)
        if not self.enabled:
            return finite
        if finite:
            for g in grads:
                g.div_(self.scale)
            self.good_steps += 1
            if self.good_steps >= self.growth_interval:
                self.scale, self.good_steps = self.scale * 2.0, 0
        else:
            self.scale, self.good_steps = self.scale / 2.0, 0
        return finite

    def state(self) -> dict:
        return {"scale": self.scale, "good_steps": self.good_steps}

    def load_state(self, state: dict) -> None:
        if self.enabled and state:
            self.scale, self.good_steps = float(state["scale"]), int(state["good_steps"])


# Layers a text-to-video run does not use by design: Wan 2.1 i2v's image-embedding projections (k_img, v_img)
# act only with CLIP-vision features, which training from noise and text does not give.
UNUSED_WITHOUT_IMAGE = ("_img.",)


def layers_without_gradient(pairs: dict) -> list[str]:
    """Keys of adapted layers whose ``up`` got no gradient in the last backward: outside the loss's graph
    (layers unused without image conditioning are not counted)."""
    return [k for k, (up, _) in pairs.items() if up.grad is None and not any(t in k for t in UNUSED_WITHOUT_IMAGE)]


def no_gradient_error(cut: list[str], total: int) -> RuntimeError:
    return RuntimeError(
        f"adapter: {len(cut)} of {total} adapted layers got no gradient (e.g. {', '.join(cut[:4])}): something "
        "between them and the loss has no backward, e.g. an attention kernel (sage, flash) that a patch node bound "
        "into the model, or an fp8 matmul. Remove that patch for the training run (sampling may keep it).")
