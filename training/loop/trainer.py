"""The PersonalVideo training loop: reward-guided fine-tuning of the isolated identity adapter.

One step: draw a prompt, a noise seed and M reward frames (from the seed and the step number, so a resumed run
draws exactly what an uninterrupted one would); generate the **source** video (frozen model) and the **tuned**
video (model + adapter) with the user's sampler, the pre-gate trajectory computed once (loop/rollout.py); decode
the M frames of both; loss = w_icr · (1 − face similarity of the tuned frames) + w_scr · KL(softmax(T·HPS_tuned) ‖
softmax(T·HPS_source)); backward into the adapter only; clip; AdamW step. A non-finite loss or gradient skips the
step and is counted; it never reaches the weights. The resume file (loop/resume.py) is written atomically every K
steps, on cancel and on errors, and ``resume`` continues from it exactly.

The ComfyUI side implements ``Backend`` (nodes/runtime/backend.py); this module never imports ComfyUI. The backward
pass runs *inside* the backend's sampling call, while ComfyUI still has the model loaded, because it recomputes the
checkpointed gated model calls. One step, as calls::

    Trainer.train_step(step)
    ├─ draw(step) -> StepDraw(prompt, noise_seed, frames)
    ├─ backend.run(prompt, noise_seed, generate_and_backprop)           nodes/runtime/backend.py
    │  └─ ComfyUI CFGGuider.sample(KSAMPLER(training_sampler))          conditioning, CFG, model loaded
    │     └─ training_sampler(model, x, sigmas)
    │        └─ generate_and_backprop(denoise, sample, x, sigmas)       back here
    │           ├─ gated_rollout(sample, denoise, x, gate_sigma)        loop/rollout.py
    │           │  ├─ sample(source_model)  no grad; records the pre-gate calls     -> Rollout.source
    │           │  └─ sample(tuned_model)   replays them; gated calls checkpointed  -> Rollout.tuned
    │           ├─ reward_terms(rollout, draw)
    │           │  ├─ backend.decode(tuned, frames) with grad; backend.decode(source, frames) without
    │           │  ├─ identity_reward(frames)                           identity/reward.py  (ICR)
    │           │  └─ semantic_score(frames, prompt) -> scr_kl_loss     semantic/reward.py  (SCR)
    │           └─ loss.backward()   recomputes the checkpointed gated calls (and blocks) -> adapter grads
    ├─ data_parallel.reduce_gradients(params, skipped)   scale-out only: mean over the ranks (scaleout/)
    ├─ clip_grad_norm_ + optimizer.step()    (or skip: non-finite, no face; fp16: loss scaling, gradients.py)
    └─ StepRecord -> TrainResult.history, on_step(record, preview)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, TypeVar

import torch

from ..adapter.experts import check_gate_after_boundary
from ..adapter.gate import step_gate_sigma
from ..adapter.lora import LoRAParameters
from ..prompts import PromptBank
from ..semantic.reward import scr_kl_loss
from .resume import load_resume_file, save_resume_file
from .gradients import LossScale, layers_without_gradient, no_gradient_error
from .memory import TrainingOutOfMemory, is_out_of_memory, out_of_memory_error, release_failed_step
from .records import Preview, StepDraw, StepRecord, TrainResult
from .rollout import Denoise, Rollout, Sample, gated_rollout
from ..logs import pack_logger

log = pack_logger(__name__)
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
    save_every: int = 50  # write the resume file every K steps (0: at the end, on cancel, on errors)
    max_grad_norm: float = 1.0
    backprop_last_k: int = 0  # 0: gradient through every gated step
    loss_scaling: bool = False  # dynamic loss scaling: on when the model or VAE computes in fp16 (gradients.py)
    expert_boundary: float | None = None  # two-expert models (Wan 2.2 A14B): the boundary; None: one model
    expert_switch_step: int | None = None  # two-expert models: the step the low-noise expert takes over at, if given


class Backend(Protocol):
    num_frames: int

    def run(self, prompt: str, seed: int, fn: Callable[[Denoise, Sample, torch.Tensor, torch.Tensor], T]) -> T:
        """Condition on ``prompt``, draw the noise for ``seed``, and call ``fn(denoise, sample, x_T, sigmas)``:
        ``sample(model_fn, x)`` runs the configured sampler over ``sigmas`` calling ``model_fn``. When the
        trained model samples only the last part of the schedule (a two-expert model), ``x_T`` is the latent
        at its first step and ``fn`` also gets ``full_sigmas=`` the whole schedule."""

    def decode(self, latent: torch.Tensor, frame_indices: list[int]) -> torch.Tensor:
        """Frames ``frame_indices`` of ``latent`` as [M, H, W, 3] in [0, 1], differentiable."""


class DataParallel(Protocol):
    """One rank of a data-parallel run (scaleout/distributed.py); the node trains without one."""

    rank: int  # draws item ``step * world_size + rank`` of the one-process draw sequence; rank 0 writes
    world_size: int
    lockstep_backward: bool  # a skipped step still runs a zero backward (a sharded model gathers in backward)

    def reduce_gradients(self, params: LoRAParameters, skipped: str) -> str:
        """After every step's backward on every rank, before clip and step: make the adapter's gradients the
        same on all ranks; returns why the step must not update the adapter ("" when it may)."""


@dataclass
class RewardTerms:
    """The loss of one step and what it is made of."""

    loss: torch.Tensor  # w_icr · ICR + w_scr · SCR, with gradient into the adapter
    icr: object  # IdentityRewardResult of the tuned frames
    source_icr: object  # IdentityRewardResult of the source frames (no gradient)
    scr: torch.Tensor  # the KL term (0 when SCR is off)
    tuned_frames: torch.Tensor  # the decoded tuned reward frames, detached (for the preview)
    independent: float = float("nan")  # mean similarity of the tuned frames by the independent recognizer
    independent_source: float = float("nan")  # the same for the source frames


class Trainer:
    def __init__(self, backend: Backend, params: LoRAParameters, prompts: PromptBank, settings: TrainSettings,
                 identity_reward: Callable, semantic_score: Callable | None = None,
                 resume_file: str | os.PathLike | None = None,
                 on_step: Callable[[StepRecord, Preview | None], None] | None = None,
                 independent_similarity: Callable[[torch.Tensor], float] | None = None,
                 data_parallel: DataParallel | None = None):
        self.backend, self.params, self.prompts, self.settings = backend, params, prompts, settings
        self.identity_reward = identity_reward  # frames -> IdentityRewardResult
        self.semantic_score = semantic_score  # (frames, prompt) -> [M] scores, or None (SCR off)
        # frames -> mean similarity to the reference by a recognizer that is not the reward's (NaN: no face);
        # evaluated on both videos of every step, without gradient: it never trains, it only watches.
        self.independent_similarity = independent_similarity
        self.resume_file = Path(resume_file) if resume_file else None
        self.on_step = on_step
        self.data_parallel = data_parallel
        if self.scr_on and settings.frames_per_reward < 2:
            raise ValueError(f"frames_per_reward: got {settings.frames_per_reward}, expected at least 2 with the "
                             "semantic reward on (SCR compares scores across frames); raise it or set scr_weight to 0")
        self.optimizer = torch.optim.AdamW(params.parameters(), lr=settings.learning_rate, weight_decay=0.0)
        self.result = TrainResult()
        self.step = 0
        self.updating = False  # inside clip + optimizer step (see train())
        self.loss_scale = LossScale(settings.loss_scaling)
        self.preview: Preview | None = None

    @property
    def scr_on(self) -> bool:
        """The semantic reward takes part: a scorer is connected and its weight is positive."""
        return self.semantic_score is not None and self.settings.scr_weight > 0

    # -- one step -------------------------------------------------------------------------------
    def draw(self, step: int) -> StepDraw:
        """Prompt, noise seed and reward frame indices of ``step``: a function of (seed, step) only (and of
        the rank in a data-parallel run: rank r of N draws item N·step + r of the one-process sequence)."""
        dp = self.data_parallel
        item = step if dp is None else step * dp.world_size + dp.rank
        prompt = self.prompts.sample(self.settings.seed, item)
        gen = torch.Generator().manual_seed(self.settings.seed * 1_000_003 + item)
        noise_seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
        m = min(self.settings.frames_per_reward, self.backend.num_frames)
        frames = sorted(torch.randperm(self.backend.num_frames, generator=gen)[:m].tolist())
        return StepDraw(prompt, noise_seed, frames)

    def generate(self, denoise: Denoise, sample: Sample, x: torch.Tensor, sigmas: torch.Tensor,
                 full_sigmas: torch.Tensor | None = None) -> Rollout:
        """Source and tuned videos sharing one pre-gate trajectory (loop/rollout.py).

        ``full_sigmas``: the whole sampling's schedule when ``sigmas`` is its last part (Wan 2.2 A14B: the
        low-noise expert's steps); the gate counts the steps of the whole sampling, as the apply node does.
        """
        s = self.settings
        if full_sigmas is not None:  # the model samples steps b..N-1 of N: the gate must open in them
            num_steps = len(full_sigmas) - 1
            check_gate_after_boundary(s.gate_start, num_steps - (len(sigmas) - 1), num_steps, s.expert_boundary,
                                      s.expert_switch_step)
        gate_sigma = step_gate_sigma(sigmas if full_sigmas is None else full_sigmas, s.gate_start)
        return gated_rollout(sample, denoise, x, gate_sigma, s.backprop_last_k)

    def decode_frames(self, latent: torch.Tensor, frames: list[int]) -> torch.Tensor:
        """The reward frames only (the backend decodes just the latent frames they depend on)."""
        return self.backend.decode(latent, frames)

    def reward_terms(self, rollout: Rollout, draw: StepDraw) -> RewardTerms:
        s = self.settings
        tuned_frames = self.decode_frames(rollout.tuned, draw.frames)
        with torch.no_grad():
            source_frames = self.decode_frames(rollout.source, draw.frames)
        icr = self.identity_reward(tuned_frames)
        with torch.no_grad():
            source_icr = self.identity_reward(source_frames)
        loss = s.icr_weight * icr.loss
        scr = torch.zeros((), device=loss.device)
        if self.scr_on:
            with torch.no_grad():
                source_scores = self.semantic_score(source_frames, draw.prompt)
            scr = scr_kl_loss(self.semantic_score(tuned_frames, draw.prompt), source_scores, s.scr_temperature)
            loss = loss + s.scr_weight * scr
        terms = RewardTerms(loss, icr, source_icr, scr, tuned_frames.detach())
        if self.independent_similarity is not None:
            with torch.no_grad():
                terms.independent = self.independent_similarity(terms.tuned_frames)
                terms.independent_source = self.independent_similarity(source_frames)
        return terms

    def _backprop(self, terms: RewardTerms) -> str:
        """Backward into the adapter; returns why the step must not update it ("" when it may)."""
        skip = ""
        if not torch.isfinite(terms.loss):
            skip = "non-finite loss"
        elif not terms.loss.requires_grad or (terms.icr.frames_with_face == 0 and not self.scr_on):
            skip = "no face in any reward frame"
        if skip:
            if self.data_parallel is not None and self.data_parallel.lockstep_backward and terms.loss.requires_grad:
                (terms.loss.nan_to_num(0.0) * 0.0).backward()  # the other ranks' backward waits for this one's
            return skip
        self.loss_scale.scaled(terms.loss).backward()
        if cut := layers_without_gradient(self.params.pairs()):  # would silently never train
            raise no_gradient_error(cut, len(self.params.keys))
        return "" if self.loss_scale.unscale(self.params.parameters()) else "non-finite gradient"

    def train_step(self, step: int) -> StepRecord:
        draw = self.draw(step)
        self.optimizer.zero_grad(set_to_none=True)

        def generate_and_backprop(denoise, sample, x, sigmas, **kwargs) -> tuple[RewardTerms, str]:
            terms = self.reward_terms(self.generate(denoise, sample, x, sigmas, **kwargs), draw)
            return terms, self._backprop(terms)

        terms, skipped = self.backend.run(draw.prompt, draw.noise_seed, generate_and_backprop)
        if self.data_parallel is not None:
            skipped = self.data_parallel.reduce_gradients(self.params, skipped)
        if skipped:
            self.optimizer.zero_grad(set_to_none=True)
            if skipped.startswith("non-finite"):
                self.result.skipped_non_finite += 1
                log.warning("training step %d skipped: %s (the adapter is unchanged)", step, skipped)
        else:
            self.updating = True  # a failure from here to the end of the step leaves a half-updated adapter
            torch.nn.utils.clip_grad_norm_(self.params.parameters(), self.settings.max_grad_norm)
            self.optimizer.step()
            self.updating = False
        icr = terms.icr
        n = icr.frames_with_face + icr.frames_without_face
        record = StepRecord(step, draw.prompt, float(terms.loss.detach()), float(icr.loss.detach()),
                            float(terms.scr.detach()), icr.mean_similarity, terms.source_icr.mean_similarity,
                            icr.frames_without_face / max(n, 1), skipped, terms.independent,
                            terms.independent_source)
        self.result.history.append(record)
        face = (getattr(icr, "faces", None) or [None])[0]
        box = getattr(face, "box", None)
        self.preview = Preview(terms.tuned_frames[0], None if box is None else [float(v) for v in box])
        return record

    # -- the loop -------------------------------------------------------------------------------
    def train(self, resume: bool = False) -> TrainResult:
        if resume and self.resume_file and self.resume_file.exists():
            self.load_resume_file()
            self.result.resumed_from = self.step
        s = self.settings
        try:
            while self.step < s.steps:
                self.train_step(self.step)
                self.step += 1
                if self.resume_file and s.save_every and self.step % s.save_every == 0:
                    self.save_resume_file()
                if self.on_step:  # after the step is counted: a cancel raised here loses nothing
                    self.on_step(self.result.history[-1], self.preview)
        except BaseException as error:  # cancel, OOM, any error: keep what was trained
            oom = is_out_of_memory(error)
            if oom:
                self.optimizer.zero_grad(set_to_none=True)
                release_failed_step(error)
            if self.updating:
                log.warning("training stopped inside the optimizer step of step %d; the adapter may be half "
                            "updated, so the resume file on disk (if any) is kept as it is", self.step)
            elif self.resume_file and self.step > 0:
                self.save_resume_file()
                log.info("training stopped at step %d; resume file kept at %s", self.step, self.resume_file)
            if oom and not isinstance(error, TrainingOutOfMemory):
                decode = getattr(self.backend, "decode_gradient", None)
                raise out_of_memory_error(error, self.step, s, decode) from error
            raise
        if self.resume_file:
            self.save_resume_file()
        return self.result

    def save_resume_file(self) -> Path | None:
        if self.data_parallel is not None and self.data_parallel.rank != 0:
            return None  # rank 0 writes: every rank holds the same adapter and optimiser state
        return save_resume_file(self.resume_file, self.params, self.optimizer, self.step, self.settings,
                               self.result, {"loss_scale": json.dumps(self.loss_scale.state())})

    def load_resume_file(self) -> None:
        self.step, meta = load_resume_file(self.resume_file, self.params, self.optimizer, self.settings,
                                          self.result)
        self.loss_scale.load_state(json.loads(meta.get("loss_scale", "{}")))
