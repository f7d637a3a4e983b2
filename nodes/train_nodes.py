"""Node: train the isolated identity adapter on the graph's own video model (PersonalVideo's method)."""

from __future__ import annotations

import logging
import uuid

import numpy as np
import torch
from PIL import Image, ImageDraw

import comfy.model_management as mm
import comfy.patcher_extension
import comfy.samplers
import comfy.utils
from comfy_api.latest import io

from .. import __version__
from ..training.adapter.files import IdentityAdapter, build_metadata
from ..training.adapter.lora import LoRAParameters
from ..training.adapter.targets import LAYER_CHOICES, AdapterTargets, select_targets
from ..training.loop.causal_decode import DECODE_MODES
from ..training.loop.summary import summarize
from ..training.loop.trainer import Trainer, TrainSettings
from . import paths
from .adapter_nodes import model_family
from .evaluator_nodes import FaceEvaluator, independent_similarity
from .expert_split import DEFAULT_BOUNDARY, HighNoiseExpert
from .gate import IdentityGate, WeightDelta, layer_weight_scale
from .prompt_nodes import PromptBankType
from .reward_nodes import IdentityReward, Reference, SemanticReward, reward_models_on
from .train_backend import TRAINING_SAMPLERS, ComfyBackend, training_mode
from ..training.loop.chart import training_chart

log = logging.getLogger(__name__)


def adapter_targets(model, layers: str) -> AdapterTargets:
    """The weights to adapt, by the model family's native module names (training/adapter/targets.py); ValueError
    for a family the trainer does not support."""
    weights = {key: tuple(t.shape) for key, t in model.model.state_dict().items()}
    return select_targets(model_family(model), weights, layers)


def lora_targets(model, layers: str) -> dict[str, tuple[int, int]]:
    """{weight key: shape} of ``adapter_targets``."""
    return adapter_targets(model, layers).shapes


def attach_trainable_adapter(model, shapes: dict[str, tuple[int, int]], rank: int, alpha: float, seed: int,
                             gate_start: float, device) -> tuple[LoRAParameters, IdentityGate, object]:
    """New trainable LoRA parameters, and a clone of ``model`` that applies them through the apply node's
    gate (the trainer switches it per branch with ``gate.forced``)."""
    params = LoRAParameters(shapes, rank, alpha, seed=seed, device=device)
    deltas = {k: WeightDelta.trainable(k, up, down, params.scale) for k, (up, down) in params.pairs().items()}
    for key, delta in deltas.items():
        delta.weight_scale = layer_weight_scale(comfy.utils.get_attr(model.model, key.rpartition(".")[0]))
    gate = IdentityGate(gate_start, "steps", deltas)
    patched = model.clone()
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL,
                                 f"personalvideo_train_{uuid.uuid4().hex}", gate.apply_model_wrapper)
    return params, gate, patched


def computes_in_fp16(model, vae) -> bool:
    """The diffusion model or the VAE computes in fp16 (cards without bf16, --fp16-unet, --fp16-vae): the
    backward pass then needs loss scaling (training/loop/gradients.py)."""
    base = model.model
    compute = getattr(base, "manual_cast_dtype", None) or base.get_dtype()
    return torch.float16 in (compute, getattr(vae, "vae_dtype", None))


def _preview(frame: torch.Tensor, box, similarity: float) -> tuple:
    """Progress-bar preview: the frame, the face box the reward used, and its similarity."""
    img = Image.fromarray((frame.clamp(0, 1).cpu().numpy() * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    if box is not None:
        draw.rectangle(box, outline=(0, 255, 0), width=2)
    draw.text((4, 4), "no face" if np.isnan(similarity) else f"sim {similarity:.3f}", fill=(255, 255, 0))
    return ("JPEG", img, 512)


def _float(name, default, lo, hi, step, tip):
    return io.Float.Input(name, default=default, min=lo, max=hi, step=step, tooltip=tip)


def _int(name, default, lo, hi, tip, step=1):
    return io.Int.Input(name, default=default, min=lo, max=hi, step=step, tooltip=tip)


class TrainIdentityAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonalVideoTrainIdentityAdapter",
            display_name="Train Identity Adapter",
            category=paths.CATEGORY + "/Training",
            description="Trains the isolated identity adapter on the connected video model: it generates videos "
                        "from noise for the bank's prompts and back-propagates the face reward (ICR) and the "
                        "semantic reward (SCR) through the gated last steps. Resumable; cancel keeps a checkpoint.",
            inputs=[
                io.Model.Input("model", tooltip="The text-to-video model to personalise (Wan, HunyuanVideo, ...; "
                                                "Wan 2.2 A14B: the low-noise expert)."),
                io.Clip.Input("clip", tooltip="The model's text encoder: encodes the bank's prompts."),
                io.Vae.Input("vae", tooltip="The model's VAE: decodes the reward frames (with gradient)."),
                Reference.Input("reference", tooltip="From Load Reference Faces."),
                IdentityReward.Input("identity_reward", tooltip="From Load Identity Reward Model (ArcFace)."),
                PromptBankType.Input("prompt_bank", tooltip="From Prompt Bank."),
                _int("steps", 200, 1, 100000, "Training steps (one generated video per step)."),
                _float("learning_rate", 1e-4, 1e-7, 1.0, 1e-6, "AdamW learning rate of the adapter."),
                _int("rank", 16, 1, 256, "LoRA rank."),
                _float("alpha", 16.0, 0.1, 1024.0, 0.1, "LoRA alpha (scale = alpha / rank)."),
                io.Combo.Input("layers", options=list(LAYER_CHOICES), default="attention",
                               tooltip="Which linear layers of the transformer blocks get the adapter, by the "
                                       "family's own module names: attention = query, key, value and output "
                                       "projections (HunyuanVideo: also the single-stream blocks' fused "
                                       "linear1/linear2); +mlp adds the feed-forward layers. The summary says "
                                       "how many were adapted."),
                _float("gate_start", 0.75, 0.0, 1.0, 0.01,
                       "Gate start: the adapter acts from step ceil(gate_start x N). The adapter carries it: "
                       "Save and Apply use it unless told otherwise."),
                _int("sampling_steps", 20, 2, 200, "Sampling steps per generated training video."),
                io.Combo.Input("sampler_name", options=list(TRAINING_SAMPLERS), default="euler",
                               tooltip="Sampler of the training videos (as KSampler runs it). Use the one you "
                                       "generate with; only samplers checked for training are offered."),
                io.Combo.Input("scheduler", options=list(comfy.samplers.SCHEDULER_NAMES), default="simple",
                               tooltip="Sigma schedule of the training videos (as KSampler's)."),
                _float("cfg", 5.0, 1.0, 30.0, 0.1, "Classifier-free guidance scale while generating (as KSampler's; "
                       "HunyuanVideo: 1.0, its guidance is embedded; 1.0 also skips the negative prompt's pass)."),
                _int("width", 480, 16, 4096, "Training video width (pixels, multiple of 16; of 32 for LTX-Video).", 16),
                _int("height", 272, 16, 4096, "Training video height (pixels, multiple of 16; of 32 for LTX-Video).",
                     16),
                _int("frames", 33, 1, 1024, "Training video length in frames: 4k+1 (LTX-Video: 8k+1).", 4),
                _int("frames_per_reward", 4, 1, 64, "M: frames per video scored by the rewards (random)."),
                _float("icr_weight", 1.0, 0.0, 100.0, 0.01, "Weight of the identity reward loss."),
                _float("scr_weight", 1.0, 0.0, 100.0, 0.01, "Weight of the semantic reward loss (SCR)."),
                _float("scr_temperature", 100.0, 0.01, 1000.0, 0.01,
                       "Multiplies HPS scores before the softmax over frames (100 = CLIP's logit scale)."),
                _int("backprop_last_k", 0, 0, 200, "0: gradient through every gated step; K: the last K only "
                     "(less memory; earlier gated steps still use the adapter)."),
                io.Boolean.Input("checkpoint_blocks", default=True,
                                 tooltip="Also recompute each transformer block in backward: one block's "
                                         "activations at a time instead of a whole step's (needed for large "
                                         "models; costs extra compute). Every gated step is checkpointed anyway."),
                _float("max_grad_norm", 1.0, 0.0, 1000.0, 0.01, "Gradient clipping norm."),
                _int("seed", 0, 0, 2**31 - 1, "Seed: same seed and settings give the same adapter."),
                _int("checkpoint_every", 50, 0, 100000, "Write a resumable checkpoint every K steps (0: only at "
                     "the end, on cancel and on errors)."),
                io.String.Input("run_name", default="identity",
                                tooltip="Names the checkpoint in output/personalvideo_training/."),
                io.Boolean.Input("resume", default=True,
                                 tooltip="Continue from this run's checkpoint if it exists (same settings)."),
                SemanticReward.Input("semantic_reward", optional=True,
                                     tooltip="From Load Semantic Reward Model (HPSv2); without it SCR is off."),
                FaceEvaluator.Input("face_evaluator", optional=True,
                                    tooltip="Load Face Evaluator (dlib): watches both videos of every step and the "
                                            "summary warns when only the reward's ArcFace sees a gain (reward "
                                            "hacking). It never trains anything; about 0.5 s per frame on a CPU."),
                io.Model.Input("high_noise_model", optional=True,
                               tooltip="Wan 2.2 A14B: the high-noise expert (with its ModelSamplingSD3, as in the "
                                       "template). It samples the steps before expert_boundary, without the "
                                       "adapter; 'model' is then the low-noise expert, the only one trained."),
                io.Float.Input("expert_boundary", default=DEFAULT_BOUNDARY, min=0.01, max=0.99, step=0.001,
                               optional=True,
                               tooltip="With high_noise_model: steps whose timestep is at least this fraction of "
                                       "the range go to the high-noise expert (official Wan 2.2 T2V: 0.875; "
                                       "ComfyUI's template splits 20 steps at 10, which 0.9 gives with shift 8)."),
                io.Combo.Input("decode_gradient", options=list(DECODE_MODES), default="checkpointed", optional=True,
                               tooltip="How the reward frames' VAE decode carries the gradient (Wan VAEs). "
                                       "checkpointed: exact, one latent frame's decoder activations at a time "
                                       "(recomputed in backward). truncated: least memory and compute, but "
                                       "approximate: no gradient through the VAE's cache of earlier latent "
                                       "frames. plain: exact, whole decode kept (fastest, most memory). Other "
                                       "VAEs (HunyuanVideo's) always decode plain."),
            ],
            outputs=[
                io.LoraModel.Output(display_name="adapter", tooltip="The trained adapter: to apply and save."),
                io.Image.Output(display_name="training_curve", tooltip="Loss, face similarity, no-face rate."),
                io.String.Output(display_name="summary", tooltip="What the run did, in numbers."),
            ],
        )

    @classmethod
    def execute(cls, model, clip, vae, reference, identity_reward, prompt_bank, steps, learning_rate, rank,
                alpha, layers, gate_start, sampling_steps, sampler_name, scheduler, cfg, width, height, frames,
                frames_per_reward, icr_weight, scr_weight, scr_temperature, backprop_last_k, checkpoint_blocks,
                max_grad_norm, seed, checkpoint_every, run_name, resume, semantic_reward=None,
                face_evaluator=None, high_noise_model=None, expert_boundary=DEFAULT_BOUNDARY,
                decode_gradient="checkpointed") -> io.NodeOutput:
        reference.check_recognizer(identity_reward)
        settings = TrainSettings(steps=steps, learning_rate=learning_rate, rank=rank, alpha=alpha,
                                 gate_start=gate_start, sampling_steps=sampling_steps, sampler=sampler_name,
                                 scheduler=scheduler, cfg=cfg,
                                 frames_per_reward=frames_per_reward, icr_weight=icr_weight,
                                 scr_weight=scr_weight, scr_temperature=scr_temperature, seed=seed,
                                 checkpoint_every=checkpoint_every, max_grad_norm=max_grad_norm,
                                 backprop_last_k=backprop_last_k, loss_scaling=computes_in_fp16(model, vae),
                                 expert_boundary=expert_boundary if high_noise_model is not None else None)
        checkpoint = paths.training_checkpoint_path(run_name)
        device = mm.get_torch_device()
        targets = adapter_targets(model, layers)  # refuses an unsupported family before anything runs
        pbar = comfy.utils.ProgressBar(steps)
        with training_mode():
            params, gate, patched = attach_trainable_adapter(model, targets.shapes, rank, alpha, seed, gate_start,
                                                             device)
            backend = ComfyBackend(patched, gate, clip, vae, prompt_bank.negative, width, height, frames,
                                   sampling_steps, cfg, checkpoint_blocks, sampler_name, scheduler)
            if high_noise_model is not None:  # refuses a gate start in the high-noise steps, before any step
                backend.use_high_noise_expert(HighNoiseExpert(high_noise_model, expert_boundary), gate_start)
            backend.encode_prompts(prompt_bank.prompts)  # all now, then the text encoder is unloaded
            backend.decode_gradient, backend.reward_device = decode_gradient, device
            ref = reference.embedding

            def on_step(record, preview):
                shown = _preview(preview.frame, preview.box, record.similarity) if preview is not None else None
                pbar.update_absolute(record.step + 1, steps, shown)
                # Cancel: raises InterruptProcessingException; the trainer writes its checkpoint first.
                mm.throw_exception_if_processing_interrupted()

            trainer = Trainer(
                backend, params, prompt_bank, settings,
                identity_reward=lambda f: identity_reward.reward(f, ref),
                semantic_score=(lambda f, p: semantic_reward.score(f, p)) if semantic_reward is not None else None,
                checkpoint_file=checkpoint, on_step=on_step,
                independent_similarity=independent_similarity(face_evaluator, reference))
            # Reward models stay on the device from forward through backward (moving their weights
            # in between would leave autograd with tensors on the wrong device).
            with reward_models_on(device, identity_reward.recognizer,
                                  semantic_reward.holder if semantic_reward is not None else None):
                result = trainer.train(resume=resume)
        tensors = params.lora_state_dict()
        # The adapter carries its gate start and expert: low_noise when a high-noise expert was connected ("" =
        # unknown: a one-model family; ComfyUI loads Wan 2.2 A14B experts as WAN21_T2V like Wan 2.1).
        meta = build_metadata(tensors, gate_start, model_family(model), __version__,
                              extra={"trained_steps": len(result.history), "layers": layers},
                              expert="low_noise" if high_noise_model is not None else "")
        adapter = IdentityAdapter(tensors, meta, source=f"trained run '{run_name}'")
        summary = summarize(result, settings, trainer.scr_on, adapted=targets.describe()) + \
            f"\ncheckpoint: {checkpoint}"
        if settings.loss_scaling:
            summary += f"\nfp16 compute: dynamic loss scaling on (scale now {trainer.loss_scale.scale:g})"
        if high_noise_model is not None:
            b = backend.boundary_step
            summary += (f"\nexperts: high-noise steps 0-{b - 1} (no adapter), low-noise steps {b}-"
                        f"{sampling_steps - 1} (trained; adapter saved as expert low_noise), boundary "
                        f"{expert_boundary:g}")
        log.info("PersonalVideo training done:\n%s", summary)
        return io.NodeOutput(adapter, training_chart(result.history), summary)


NODES = [TrainIdentityAdapter]
