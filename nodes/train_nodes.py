"""Node: train the isolated identity adapter on the graph's own video model (PersonalVideo's method).

The schema and the mapping of its inputs; the run itself is nodes/runtime/training_run.py.
"""

from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from ..training.adapter.experts import DEFAULT_BOUNDARY
from ..training.adapter.targets import LAYER_CHOICES
from ..training.loop.causal_decode import DECODE_MODES
from ..training.loop.trainer import TrainSettings
from .runtime.backend import TRAINING_SAMPLERS, ComfyBackendSettings
from .runtime.model import computes_in_fp16
from .runtime.training_run import train_identity_adapter
from .types import TRAINING_CATEGORY, FaceEvaluator, IdentityReward, PromptBankType, Reference, SemanticReward


def expert_split_settings(high_noise_model, boundary: float, switch_step: int) -> dict:
    """The TrainSettings fields of the expert split (recorded in resume files; a resume must match): the switch step
    when one is given, else the boundary; neither for a one-model family."""
    if high_noise_model is None:
        return {"expert_boundary": None, "expert_switch_step": None}
    if switch_step:
        return {"expert_boundary": None, "expert_switch_step": int(switch_step)}
    return {"expert_boundary": boundary, "expert_switch_step": None}


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
            category=TRAINING_CATEGORY,
            description="Trains the isolated identity adapter on the connected video model: it generates videos "
                        "from noise for the bank's prompts and back-propagates the face reward (ICR) and the "
                        "semantic reward (SCR) through the gated last steps. Resumable; cancel keeps a resume file.",
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
                # save_every was named checkpoint_every: saved workflows keep its value (widgets load by position)
                _int("save_every", 50, 0, 100000, "Write the run's resume file every K steps (0: only at "
                     "the end, on cancel and on errors)."),
                io.String.Input("run_name", default="identity",
                                tooltip="Names the run's resume file in output/personalvideo_training/."),
                io.Boolean.Input("resume", default=True,
                                 tooltip="Continue from this run's resume file if it exists (same settings)."),
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
                               tooltip="With high_noise_model and expert_switch_step 0: steps whose timestep is at "
                                       "least this fraction of the range go to the high-noise expert (official Wan "
                                       "2.2 T2V: 0.875). Which step that is depends on the shift and the step "
                                       "count (the summary says); to train on your graph's split, set "
                                       "expert_switch_step instead."),
                io.Combo.Input("decode_gradient", options=list(DECODE_MODES), default="checkpointed", optional=True,
                               tooltip="How the reward frames' VAE decode carries the gradient (Wan VAEs). "
                                       "checkpointed: exact, one latent frame's decoder activations at a time "
                                       "(recomputed in backward). truncated: least memory and compute, but "
                                       "approximate: no gradient through the VAE's cache of earlier latent "
                                       "frames. plain: exact, whole decode kept (fastest, most memory). Other "
                                       "VAEs (HunyuanVideo's) always decode plain."),
                # Last on purpose: saved workflows store widget values by position, so an input added after the
                # others keeps old files' values where they were.
                io.Int.Input("expert_switch_step", default=0, min=0, max=200, optional=True,
                             tooltip="With high_noise_model: the step at which the low-noise expert takes over, as "
                                     "your graph has it (the first KSamplerAdvanced's end_at_step; ComfyUI's Wan "
                                     "2.2 template: 10 of 20 steps, with the 4-step LoRAs 2 of 4). 0: split at "
                                     "expert_boundary instead."),
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
                max_grad_norm, seed, save_every, run_name, resume, semantic_reward=None,
                face_evaluator=None, high_noise_model=None, expert_boundary=DEFAULT_BOUNDARY,
                decode_gradient="checkpointed", expert_switch_step=0) -> io.NodeOutput:
        settings = TrainSettings(steps=steps, learning_rate=learning_rate, rank=rank, alpha=alpha,
                                 gate_start=gate_start, sampling_steps=sampling_steps, sampler=sampler_name,
                                 scheduler=scheduler, cfg=cfg,
                                 frames_per_reward=frames_per_reward, icr_weight=icr_weight,
                                 scr_weight=scr_weight, scr_temperature=scr_temperature, seed=seed,
                                 save_every=save_every, max_grad_norm=max_grad_norm,
                                 backprop_last_k=backprop_last_k, loss_scaling=computes_in_fp16(model, vae),
                                 **expert_split_settings(high_noise_model, expert_boundary, expert_switch_step))
        sampling = ComfyBackendSettings(prompt_bank.negative, width, height, frames, sampling_steps, cfg,
                                        checkpoint_blocks, sampler_name, scheduler, decode_gradient)
        adapter, chart, summary = train_identity_adapter(
            model, clip, vae, reference, identity_reward, prompt_bank, settings, layers, sampling, run_name, resume,
            semantic_reward, face_evaluator, high_noise_model)
        return io.NodeOutput(adapter, chart, summary)


NODES = [TrainIdentityAdapter]
