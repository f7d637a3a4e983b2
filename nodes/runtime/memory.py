"""Room for backward: the trainer asks ComfyUI for the memory a training step needs, not only a forward's.

ComfyUI decides how much of a model to load (and what else to unload) in ``prepare_sampling`` from the
activation memory a *forward* of the noise shape needs (``BaseModel.memory_required``). A training step also
keeps, inside each gradient-carrying model call, what backward needs: with ``checkpoint_blocks`` the inputs of
every block plus one block's recomputed activations and their gradients (about 3 forwards' worth: this estimate
is the factor below); without it, every block's activations. So the training clone wraps ``prepare_sampling``
(a core wrapper, ``WrappersMP.PREPARE_SAMPLING``) and hands it a noise shape whose batch is scaled by that
factor: ComfyUI's own estimate then reserves the room, frees other models for it and loads only as much of the
diffusion model as leaves it (the rest is cast per layer, which autograd goes through). Core's own trainer asks
for everything (``memory_required=1e20``, full load), which does not fit a 14B model on a 24 GB card.
"""

from __future__ import annotations

import uuid

import comfy.patcher_extension

from ...training.loop.block_checkpoint import BLOCK_LISTS
from ...training.logs import pack_logger

log = pack_logger(__name__)

# Forward activations' worth of memory one gated call needs with block checkpointing: the recomputed block's
# activations, their gradients, and the checkpointed block inputs. An estimate (not measurable without a GPU;
# benchmarks/gpu_check.sh reports the real peaks), erring high.
CHECKPOINTED_FACTOR = 3


def training_memory_factor(diffusion_model, checkpoint_blocks: bool) -> int:
    """How many forward activations' worth of memory a gated training call holds."""
    if checkpoint_blocks:
        return CHECKPOINTED_FACTOR
    blocks = sum(len(getattr(diffusion_model, name, ())) for name in BLOCK_LISTS)
    return CHECKPOINTED_FACTOR + max(blocks, 1)


def reserve_training_memory(patcher, checkpoint_blocks: bool) -> int | None:
    """Make ``patcher``'s sampling calls ask ComfyUI for a training step's memory; returns the factor used, or
    None when this ComfyUI has no ``PREPARE_SAMPLING`` wrapper (then it reserves a forward's, as before)."""
    kind = getattr(comfy.patcher_extension.WrappersMP, "PREPARE_SAMPLING", None)
    if kind is None:
        log.warning("PersonalVideo training: this ComfyUI cannot be asked for room for backward (no "
                    "PREPARE_SAMPLING wrapper); it reserves a forward's memory only")
        return None
    factor = training_memory_factor(patcher.model.diffusion_model, checkpoint_blocks)

    def prepare_for_training(executor, model, noise_shape, conds, *args, **kwargs):
        # the other arguments pass through as given: their set differs between versions (0.33 adds force_full_load)
        scaled = [noise_shape[0] * factor] + list(noise_shape[1:])
        return executor(model, scaled, conds, *args, **kwargs)

    patcher.add_wrapper_with_key(kind, f"personalvideo_train_memory_{uuid.uuid4().hex}", prepare_for_training)
    return factor
