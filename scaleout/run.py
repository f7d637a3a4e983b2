"""The scale-out trainer's work, behind the command (scaleout/train.py): load the reward models and the model once,
then train one identity adapter per identity of the config, each from the same fresh adapter.

Per identity, in ``<output folder>/<name>/``: ``resume.safetensors`` (the resume file; written by rank 0 every
``save_every`` steps, on errors and at the end), ``<name>.safetensors`` (the adapter as a ComfyUI LoRA with
the pack's metadata: Load Identity Adapter and core LoraLoaderModelOnly read it), ``training_curve.png`` (the
node's chart) and ``summary.txt``. The loop is the node's (training/loop/trainer.py), with the data-parallel hook
of scaleout/distributed.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open

from ..training.atomic import write_atomic
from ..training.identity.reference import build_reference
from ..training.identity.reward import load_identity_reward_model
from ..training.loop.chart import training_chart
from ..training.loop.records import TrainResult
from ..training.loop.summary import summarize
from ..training.loop.trainer import Trainer, TrainSettings
from ..training.prompts import PromptBank, build_prompt_bank

from .config import Config
from .distributed import DistributedRun

log = logging.getLogger("personalvideo.scaleout.train")  # the command's lines, whichever module says them
RESUME_FILE, CHART, SUMMARY = "resume.safetensors", "training_curve.png", "summary.txt"
RESUME_FILE_BEFORE_RENAME = "checkpoint.safetensors"  # its name in runs started before it was called resume file


def resume_file_in(folder: Path) -> Path:
    """An identity folder's resume file; a run started before the rename continues in its checkpoint.safetensors."""
    old = folder / RESUME_FILE_BEFORE_RENAME
    return old if old.exists() and not (folder / RESUME_FILE).exists() else folder / RESUME_FILE


def written_files(folder: Path, name: str) -> dict[str, Path]:
    """What a finished identity leaves in its folder, by what each file is."""
    return {"adapter (ComfyUI LoRA)": folder / f"{name}.safetensors", "resume file": resume_file_in(folder),
            "training curve": folder / CHART, "summary": folder / SUMMARY}


def resumed_step(path: Path) -> int:
    """The step a run continues at from the resume file ``path`` (its header), 0 when there is none."""
    if not path.exists():
        return 0
    with safe_open(str(path), framework="pt") as f:
        return int((f.metadata() or {}).get("step", 0))


def updated_steps(result: TrainResult) -> int:
    """How many steps of the run (resumed ones included) changed the adapter."""
    return sum(1 for r in result.history if not r.skipped)


@dataclass
class Rewards:
    """The reward callables of one identity, as the trainer takes them."""

    identity: Callable  # frames -> IdentityRewardResult
    semantic: Callable | None = None  # (frames, prompt) -> scores; None: SCR off


def save_chart(path: Path, result: TrainResult) -> Path:
    """The node's training-curve image (loss, face similarity of adapter and base, no-face rate) as a PNG."""
    pixels = (training_chart(result.history)[0].numpy() * 255).round().astype(np.uint8)
    return write_atomic(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))


class ProgressBar:
    """tqdm on rank 0 (other ranks show nothing), updated by the trainer's ``on_step``."""

    def __init__(self, run: DistributedRun, total: int, name: str, done: int = 0):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=min(done, total), desc=name, unit="step", disable=not run.is_main,
                        dynamic_ncols=True)

    def __call__(self, record, preview) -> None:
        self.bar.n = record.step + 1
        self.bar.set_postfix(loss=f"{record.loss:.4f}", sim=f"{record.similarity:.3f}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def train_identity(model, bank: PromptBank, settings: TrainSettings, rewards: Rewards, run: DistributedRun,
                   folder: Path, name: str, resume: bool) -> TrainResult:
    """Train ``model``'s adapter (a ``scaleout.backends.ScaleoutModel``) for one identity on every rank; rank 0
    writes the resume file, the ComfyUI LoRA, the chart and the summary into ``folder``."""
    resume_file = resume_file_in(folder)
    done = resumed_step(resume_file) if resume else 0
    if done:
        log.info("%s: continuing at step %d of %d from %s", name, done, settings.steps, resume_file)
    bar = ProgressBar(run, settings.steps, name, done)  # a resumed run's bar starts where it left off
    trainer = Trainer(model.backend, model.params, bank, settings, identity_reward=rewards.identity,
                      semantic_score=rewards.semantic, resume_file=resume_file, on_step=bar, data_parallel=run)
    try:
        result = trainer.train(resume=resume)
    finally:
        bar.close()
    if run.is_main:
        model.export_comfyui(folder / f"{name}.safetensors", {
            "trained_steps": str(len(result.history)), "identity": name, "seed": str(settings.seed),
            "world_size": str(run.world_size)})
        save_chart(folder / CHART, result)
        summary = summarize(result, settings, trainer.scr_on, adapted=getattr(model, "adapted", "") or None) + \
            f"\nprocesses: {run.world_size}"
        write_atomic(folder / SUMMARY, lambda tmp: Path(tmp).write_text(summary + "\n"))
        log.info("%s done:\n%s", name, summary)
    run.barrier()  # no rank starts the next identity (or exits) before rank 0's files are written
    return result


def load_photo(path: Path) -> torch.Tensor:
    """An RGB photo as [H, W, 3] float in [0, 1] (what build_reference takes)."""
    with Image.open(path) as img:
        return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)


def model_dtype(config: Config, device: torch.device) -> torch.dtype:
    from ..training.devices import half_dtype_for

    name = config.compute.dtype
    return half_dtype_for(device) if name == "auto" else getattr(torch, name)


def build_model(spec, settings: TrainSettings, run: DistributedRun, dtype: torch.dtype, fsdp: bool,
                build_backend=None):
    """This rank's model (a ``scaleout.backends.ScaleoutModel``): whole on ``run.device``, or with ``fsdp`` and 2+
    processes its transformer blocks FSDP2-sharded while they load, so no rank but 0 (which reads the whole
    weights once, on the CPU) ever holds a whole block (scaleout/distributed.py's load_sharded)."""
    if build_backend is None:
        from .backends import build_backend
    if fsdp and not run.active:
        log.info("fsdp: one process, nothing to shard across; the model stays whole")
    return build_backend(spec, settings, run.device, dtype, run if fsdp and run.active else None)


def train_all(config: Config, run: DistributedRun, build_backend=None) -> dict[str, TrainResult]:
    """Load the reward models and the model once, then train one adapter per identity (each from the same
    fresh adapter). ``build_backend``: scaleout.backends.build_backend unless given."""
    r = config.rewards
    identity_model = load_identity_reward_model(r.insightface_pack, r.det_size, r.det_threshold, run.device,
                                                run.device)
    semantic_model = None
    if r.hpsv2 is not None:
        from ..training.semantic.reward import load_semantic_reward_model

        semantic_model = load_semantic_reward_model(r.hpsv2, r.hps_architecture, run.device, run.device)
    dtype = model_dtype(config, run.device)
    settings = replace(config.train, loss_scaling=dtype == torch.float16)
    model = build_model(config.model, settings, run, dtype, config.compute.fsdp, build_backend)
    # the boundary the model was built with (a two-expert folder's own when the config sets none): the resume file
    # records it, and resuming with another is refused
    settings = replace(settings, expert_boundary=getattr(model, "expert_boundary", None))
    fresh = model.params.lora_state_dict()
    results = {}
    for ident in config.identities:
        model.params.load_lora_state_dict(fresh)
        reference = build_reference(identity_model, [load_photo(p) for p in ident.photos], r.augmentations,
                                    r.crop_jitter, r.colour_jitter, seed=settings.seed)
        log.info("%s: %s", ident.name, reference.report())
        ref = reference.embedding.to(run.device)
        p = config.prompts
        negative = getattr(config.model, "negative_prompt", "")  # the backend conditions on the model's own
        bank = build_prompt_bank(ident.subject or p.subject, "\n".join(p.prompts), negative, p.use_built_in)
        model.backend.encode_prompts(bank.prompts)  # all at once, before training (as the node does)
        semantic = None if semantic_model is None else (lambda f, prompt: semantic_model.score(f, prompt))
        rewards = Rewards(lambda frames: identity_model.reward(frames, ref), semantic)
        results[ident.name] = train_identity(model, bank, settings, rewards, run, config.output.folder / ident.name,
                                             ident.name, config.output.resume)
    return results

