"""One run of the trainer node: the trainable adapter on a clone of the model, the backend, the rewards and the
trainer (training/loop/trainer.py), then the adapter with its header, the training curve and the summary.

The node (nodes/train_nodes.py) turns its inputs into ``TrainSettings`` and ``ComfyBackendSettings`` and calls
``train_identity_adapter``; what ComfyUI gives a node (progress bar, cancel, devices, folders) is used here.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from PIL import Image, ImageDraw

import comfy.model_management as mm
import comfy.utils

from ...evaluation.dlib_face import independent_similarity
from ...training.adapter.files import IdentityAdapter, build_metadata
from ...training.loop.chart import training_chart
from ...training.loop.summary import summarize
from ...training.loop.trainer import Trainer, TrainSettings
from .. import paths
from .autograd import training_mode
from .backend import ComfyBackend, ComfyBackendSettings
from .expert_split import HighNoiseExpert
from .model import adapter_targets, attach_trainable_adapter, model_family
from .reward_devices import reward_models_on
from ...training.logs import pack_logger

log = pack_logger(__name__)


def _preview(frame: torch.Tensor, box, similarity: float) -> tuple:
    """Progress-bar preview: the frame, the face box the reward used, and its similarity."""
    img = Image.fromarray((frame.clamp(0, 1).cpu().numpy() * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    if box is not None:
        draw.rectangle(box, outline=(0, 255, 0), width=2)
    draw.text((4, 4), "no face" if np.isnan(similarity) else f"sim {similarity:.3f}", fill=(255, 255, 0))
    return ("JPEG", img, 512)


def train_identity_adapter(model, clip, vae, reference, identity_reward, prompt_bank, settings: TrainSettings,
                           layers: str, sampling: ComfyBackendSettings, run_name: str, resume: bool,
                           semantic_reward=None, face_evaluator=None, high_noise_model=None,
                           ) -> tuple[IdentityAdapter, torch.Tensor, str]:
    """Train the identity adapter of ``model`` (Wan 2.2 A14B: the low-noise expert, ``high_noise_model`` the other;
    ``settings.expert_switch_step`` or else ``expert_boundary`` their split); returns (adapter, training-curve IMAGE,
    summary)."""
    reference.check_recognizer(identity_reward)
    resume_file = paths.resume_file_path(run_name)
    device = mm.get_torch_device()
    targets = adapter_targets(model, layers)  # refuses an unsupported family before anything runs
    sampling = dataclasses.replace(sampling, reward_device=device)  # where the reward models are
    pbar = comfy.utils.ProgressBar(settings.steps)
    with training_mode():
        params, gate, patched = attach_trainable_adapter(model, targets.shapes, settings.rank, settings.alpha,
                                                         settings.seed, settings.gate_start, device)
        high_noise = None if high_noise_model is None else HighNoiseExpert(
            high_noise_model, settings.expert_boundary, settings.expert_switch_step or 0)
        backend = ComfyBackend(patched, gate, clip, vae, sampling, high_noise)
        backend.encode_prompts(prompt_bank.prompts)  # all now, then the text encoder is unloaded
        ref = reference.embedding

        def on_step(record, preview):
            shown = _preview(preview.frame, preview.box, record.similarity) if preview is not None else None
            pbar.update_absolute(record.step + 1, settings.steps, shown)
            # Cancel: raises InterruptProcessingException; the trainer writes its resume file first.
            mm.throw_exception_if_processing_interrupted()

        trainer = Trainer(
            backend, params, prompt_bank, settings,
            identity_reward=lambda f: identity_reward.reward(f, ref),
            semantic_score=(lambda f, p: semantic_reward.score(f, p)) if semantic_reward is not None else None,
            resume_file=resume_file, on_step=on_step,
            independent_similarity=independent_similarity(face_evaluator, reference))
        # Reward models stay on the device from forward through backward (moving their weights
        # in between would leave autograd with tensors on the wrong device).
        with reward_models_on(device, identity_reward.recognizer,
                              semantic_reward.holder if semantic_reward is not None else None):
            result = trainer.train(resume=resume)
    tensors = params.lora_state_dict()
    # The adapter carries its gate start and expert: low_noise when a high-noise expert was connected ("" =
    # unknown: a one-model family; ComfyUI loads Wan 2.2 A14B experts as WAN21_T2V like Wan 2.1).
    meta = build_metadata(tensors, settings.gate_start, model_family(model),
                          extra={"trained_steps": len(result.history), "layers": layers},
                          expert="low_noise" if high_noise is not None else "")
    adapter = IdentityAdapter(tensors, meta, source=f"trained run '{run_name}'")
    summary = summarize(result, settings, trainer.scr_on, adapted=targets.describe()) + f"\nresume file: {resume_file}"
    if settings.loss_scaling:
        summary += f"\nfp16 compute: dynamic loss scaling on (scale now {trainer.loss_scale.scale:g})"
    if high_noise is not None:
        b = backend.boundary_step
        summary += (f"\nexperts: high-noise steps 0-{b - 1} (no adapter), low-noise steps {b}-"
                    f"{settings.sampling_steps - 1} (trained; adapter saved as expert low_noise), split at step {b} of "
                    f"{settings.sampling_steps} by {high_noise.describe_split()} (in the graph: the first "
                    f"KSamplerAdvanced's end_at_step {b})")
    log.info("PersonalVideo training done:\n%s", summary)
    return adapter, training_chart(result.history), summary
