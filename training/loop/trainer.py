"""The PersonalVideo training loop: reward-guided fine-tuning of the isolated identity adapter.

One step: pick a prompt and noise (from the seed and the step number, so a resumed run draws exactly
what an uninterrupted one would); generate the source and adapter videos with the user's sampler, the
pre-gate trajectory computed once (training/loop/rollout.py); decode the same M randomly chosen frames of
both; loss = w_icr · (1 − face similarity of the adapter frames) + w_scr · KL(softmax(T·HPS_adapter) ‖ softmax(T·HPS_source));
backward into the adapter only; clip; Adam step. A non-finite loss or gradient skips the step and is
counted; it never reaches the weights. A checkpoint (adapter, optimiser state, step, history) is written
atomically every K steps, on cancel and on errors, and ``resume`` continues from it exactly.

The ComfyUI side implements ``Backend`` (conditioning, sampling with the model's own sigmas and CFG,
differentiable decoding); this module never imports ComfyUI.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol, TypeVar

import torch
from safetensors import safe_open

from ..adapter.files import save_safetensors_atomic
from ..adapter.gate import step_gate_sigma
from ..adapter.lora import LoRAParameters
from ..prompts import PromptBank
from .gradients import LossScale, layers_without_gradient, no_gradient_error
from .memory import TrainingOutOfMemory, is_out_of_memory, out_of_memory_error, release_failed_step
from .rollout import Denoise, Rollout, Sample, gated_rollout
from ..semantic.reward import scr_kl_loss

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class TrainSettings:
    steps: int = 200
    learning_rate: float = 1e-4
    rank: int = 16
    alpha: float = 16.0
    gate_start: float = 0.75
    sampling_steps: int = 20
    sampler: str = "euler"  # the backend's sampler and sigma schedule (ComfyUI's names)
    scheduler: str = "simple"
    cfg: float = 5.0
    frames_per_reward: int = 4
    icr_weight: float = 1.0
    scr_weight: float = 1.0
    scr_temperature: float = 100.0
    seed: int = 0
    checkpoint_every: int = 50
    max_grad_norm: float = 1.0
    backprop_last_k: int = 0  # 0: gradient through every gated step
    loss_scaling: bool = False  # dynamic loss scaling: on when the model or VAE computes in fp16 (gradients.py)


class Backend(Protocol):
    num_frames: int

    def run(self, prompt: str, seed: int, fn: Callable[[Denoise, Sample, torch.Tensor, torch.Tensor], T]) -> T:
        """Condition on ``prompt``, draw the noise for ``seed``, and call ``fn(denoise, sample, x_T, sigmas)``:
        ``sample(model_fn, x)`` runs the configured sampler over ``sigmas`` calling ``model_fn``."""

    def decode(self, latent: torch.Tensor, frame_indices: list[int]) -> torch.Tensor:
        """Frames ``frame_indices`` of ``latent`` as [M, H, W, 3] in [0, 1], differentiable."""


@dataclass
class StepRecord:
    step: int
    prompt: str
    loss: float
    icr_loss: float
    scr_loss: float
    similarity: float  # mean face similarity of the adapter frames (NaN: no face)
    source_similarity: float
    no_face_rate: float
    skipped: str = ""  # why the step did not update the adapter ("" = it did)


@dataclass
class TrainResult:
    history: list[StepRecord] = field(default_factory=list)
    skipped_non_finite: int = 0
    resumed_from: int = 0


class Trainer:
    def __init__(self, backend: Backend, params: LoRAParameters, prompts: PromptBank, settings: TrainSettings,
                 identity_reward: Callable, semantic_score: Callable | None = None,
                 checkpoint_file: str | os.PathLike | None = None,
                 on_step: Callable[[StepRecord, tuple | None], None] | None = None):
        self.backend, self.params, self.prompts, self.s = backend, params, prompts, settings
        self.identity_reward = identity_reward  # frames -> IdentityRewardResult
        self.semantic_score = semantic_score  # (frames, prompt) -> [M] scores, or None (SCR off)
        self.checkpoint_file = Path(checkpoint_file) if checkpoint_file else None
        self.on_step = on_step
        if self.scr_on and settings.frames_per_reward < 2:
            raise ValueError(f"frames_per_reward: got {settings.frames_per_reward}, expected at least 2 with the "
                             "semantic reward on (SCR compares scores across frames); raise it or set scr_weight to 0")
        self.optimizer = torch.optim.AdamW(params.parameters(), lr=settings.learning_rate, weight_decay=0.0)
        self.result = TrainResult()
        self.step = 0
        self.updating = False  # inside clip + optimizer step (see train())
        self.loss_scale = LossScale(settings.loss_scaling)
        self.preview: tuple[torch.Tensor, list[float] | None] | None = None  # frame, face box

    @property
    def scr_on(self) -> bool:
        """The semantic reward takes part: a scorer is connected and its weight is positive."""
        return self.semantic_score is not None and self.s.scr_weight > 0

    # -- one step -------------------------------------------------------------------------------
    def draws(self, step: int) -> tuple[str, int, list[int]]:
        """Prompt, noise seed and reward frame indices of ``step``: a function of (seed, step) only."""
        prompt = self.prompts.sample(self.s.seed, step)
        gen = torch.Generator().manual_seed(self.s.seed * 1_000_003 + step)
        noise_seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
        m = min(self.s.frames_per_reward, self.backend.num_frames)
        frames = sorted(torch.randperm(self.backend.num_frames, generator=gen)[:m].tolist())
        return prompt, noise_seed, frames

    def generate(self, denoise: Denoise, sample: Sample, x: torch.Tensor, sigmas: torch.Tensor) -> Rollout:
        """Source and adapter videos sharing one pre-gate trajectory (training/loop/rollout.py)."""
        return gated_rollout(sample, denoise, x, step_gate_sigma(sigmas, self.s.gate_start), self.s.backprop_last_k)

    def decode_frames(self, latent: torch.Tensor, frames: list[int]) -> torch.Tensor:
        """The reward frames only (the backend decodes just the latent frames they depend on)."""
        return self.backend.decode(latent, frames)

    def _losses(self, rollout: Rollout, prompt: str, frames: list[int]):
        adapter_frames = self.decode_frames(rollout.adapter, frames)
        with torch.no_grad():
            source_frames = self.decode_frames(rollout.source, frames)
        icr = self.identity_reward(adapter_frames)
        with torch.no_grad():
            source_icr = self.identity_reward(source_frames)
        loss = self.s.icr_weight * icr.loss
        scr = torch.zeros((), device=loss.device)
        if self.scr_on:
            with torch.no_grad():
                source_scores = self.semantic_score(source_frames, prompt)
            scr = scr_kl_loss(self.semantic_score(adapter_frames, prompt), source_scores, self.s.scr_temperature)
            loss = loss + self.s.scr_weight * scr
        return loss, icr, source_icr, scr, adapter_frames.detach()

    def train_step(self, step: int) -> StepRecord:
        prompt, noise_seed, frames = self.draws(step)
        self.optimizer.zero_grad(set_to_none=True)

        def generate_and_backprop(denoise, sample, x, sigmas):
            rollout = self.generate(denoise, sample, x, sigmas)
            loss, icr, source_icr, scr, preview = self._losses(rollout, prompt, frames)
            skipped = ""
            if not torch.isfinite(loss):
                skipped = "non-finite loss"
            elif icr.frames_with_face == 0 and not self.scr_on:
                skipped = "no face in any reward frame"
            elif loss.requires_grad:
                self.loss_scale.scaled(loss).backward()
                if cut := layers_without_gradient(self.params.pairs()):  # would silently never train
                    raise no_gradient_error(cut, len(self.params.keys))
                if not self.loss_scale.unscale(self.params.parameters()):
                    skipped = "non-finite gradient"
            else:
                skipped = "no face in any reward frame"
            return loss.detach(), icr, source_icr, scr.detach(), preview, skipped

        loss, icr, source_icr, scr, preview, skipped = self.backend.run(prompt, noise_seed, generate_and_backprop)
        if skipped:
            self.optimizer.zero_grad(set_to_none=True)
            if skipped.startswith("non-finite"):
                self.result.skipped_non_finite += 1
                log.warning("training step %d skipped: %s (the adapter is unchanged)", step, skipped)
        else:
            self.updating = True  # a failure from here to the end of the step leaves a half-updated adapter
            torch.nn.utils.clip_grad_norm_(self.params.parameters(), self.s.max_grad_norm)
            self.optimizer.step()
            self.updating = False
        n = icr.frames_with_face + icr.frames_without_face
        record = StepRecord(step, prompt, float(loss), float(icr.loss.detach()), float(scr), icr.mean_similarity,
                            source_icr.mean_similarity, icr.frames_without_face / max(n, 1), skipped)
        self.result.history.append(record)
        faces = getattr(icr, "faces", None) or [None]
        box = getattr(faces[0], "box", None)
        self.preview = (preview[0], None if box is None else [float(v) for v in box])
        return record

    # -- the loop -------------------------------------------------------------------------------
    def train(self, resume: bool = False) -> TrainResult:
        if resume and self.checkpoint_file and self.checkpoint_file.exists():
            self.load_checkpoint()
            self.result.resumed_from = self.step
        try:
            while self.step < self.s.steps:
                self.train_step(self.step)
                self.step += 1
                if self.checkpoint_file and self.s.checkpoint_every and self.step % self.s.checkpoint_every == 0:
                    self.save_checkpoint()
                if self.on_step:  # after the step is counted: a cancel raised here loses nothing
                    self.on_step(self.result.history[-1], self.preview)
        except BaseException as error:  # cancel, OOM, any error: keep what was trained
            oom = is_out_of_memory(error)
            if oom:
                self.optimizer.zero_grad(set_to_none=True)
                release_failed_step(error)
            if self.updating:
                log.warning("training stopped inside the optimizer step of step %d; the adapter may be half "
                            "updated, so the checkpoint on disk (if any) is kept as it is", self.step)
            elif self.checkpoint_file and self.step > 0:
                self.save_checkpoint()
                log.info("training stopped at step %d; checkpoint kept at %s", self.step, self.checkpoint_file)
            if oom and not isinstance(error, TrainingOutOfMemory):
                raise out_of_memory_error(error, self.step, self.s) from error
            raise
        if self.checkpoint_file:
            self.save_checkpoint()
        return self.result

    # -- checkpoints: safetensors only (tensors + JSON in the header), written atomically -------
    def save_checkpoint(self) -> Path:
        tensors = {f"adapter.{k}": v for k, v in self.params.lora_state_dict().items()}
        opt = self.optimizer.state_dict()
        for pid, state in opt["state"].items():
            for name, value in state.items():
                tensors[f"optim.{pid}.{name}"] = torch.as_tensor(value).detach().to("cpu", copy=True)  # no device alloc
        meta = {
            "personalvideo.checkpoint": "1",
            "step": str(self.step),
            "settings": json.dumps(asdict(self.s)),
            "history": json.dumps([asdict(r) for r in self.result.history], allow_nan=True),
            "skipped_non_finite": str(self.result.skipped_non_finite),
            "loss_scale": json.dumps(self.loss_scale.state()),
        }
        return save_safetensors_atomic(self.checkpoint_file, tensors, meta)

    def load_checkpoint(self) -> None:
        path = self.checkpoint_file
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("personalvideo.checkpoint") != "1":
            raise ValueError(f"resume: {path} is not a PersonalVideo training checkpoint")
        saved = json.loads(meta["settings"])
        for key in ("rank", "gate_start", "sampling_steps", "seed"):
            if saved.get(key) != getattr(self.s, key):
                raise ValueError(f"resume: {path} was trained with {key}={saved.get(key)}, this run has "
                                 f"{key}={getattr(self.s, key)}; use the same value or turn resume off")
        self.params.load_lora_state_dict({k[len("adapter."):]: v for k, v in tensors.items()
                                          if k.startswith("adapter.")})
        device = next(self.params.parameters()).device
        state: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v.to(device) if name != "step" else v
        opt = self.optimizer.state_dict()
        opt["state"] = state
        self.optimizer.load_state_dict(opt)
        self.step = int(meta["step"])
        self.result.history = [StepRecord(**r) for r in json.loads(meta["history"])]
        self.result.skipped_non_finite = int(meta.get("skipped_non_finite", 0))
        self.loss_scale.load_state(json.loads(meta.get("loss_scale", "{}")))


def summarize(result: TrainResult, settings: TrainSettings, semantic_on: bool) -> str:
    """A short text summary of a run for the node's STRING output."""
    done = [r for r in result.history if not r.skipped]
    first = result.history[: max(1, len(result.history) // 5)]
    last = result.history[-max(1, len(result.history) // 5):]

    def mean(rows, attr):
        vals = [getattr(r, attr) for r in rows if not math.isnan(getattr(r, attr))]
        return sum(vals) / len(vals) if vals else float("nan")

    lines = [
        f"{len(result.history)} steps ({len(done)} updated the adapter; {result.skipped_non_finite} skipped for "
        f"NaN/Inf; resumed from step {result.resumed_from})",
        f"face similarity (adapter branch): first fifth {mean(first, 'similarity'):.3f} -> last fifth "
        f"{mean(last, 'similarity'):.3f}; base model on the same draws: {mean(last, 'source_similarity'):.3f}",
        f"no-face rate (last fifth): {mean(last, 'no_face_rate'):.2f}",
        f"SCR: {'on, KL last fifth %.4f' % mean(last, 'scr_loss') if semantic_on else 'off (no semantic reward model connected, or scr_weight 0)'}",
        f"gate start {settings.gate_start}, {settings.sampling_steps} sampling steps ({settings.sampler}, "
        f"{settings.scheduler}), rank {settings.rank}, "
        f"lr {settings.learning_rate:g}",
    ]
    return "\n".join(lines)
