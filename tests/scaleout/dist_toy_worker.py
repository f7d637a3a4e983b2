"""One rank of a data-parallel toy run, launched by tests/scaleout/test_distributed_*.py with
``torchrun --nproc_per_node 2 -m tests.scaleout.dist_toy_worker OUT STEPS [fsdp]`` (from the repository root) on the
CPU (gloo).

Written for the tests (a stand-in, said plainly): a toy video model whose frozen base is a stack of linear blocks
with the LoRA inside each block (where peft puts it), the toy decoder and the toy identity reward of
tests/training/loop/toy_backend.py, small enough that equality of gradients and adapters can be checked exactly
in seconds. Everything else is the real path: scaleout.distributed (gloo process group through accelerate, the
gradient mean, FSDP2 ``fully_shard`` per block), scaleout.run.train_identity (the node's Trainer with the
data-parallel hook, rank-0 resume file / ComfyUI LoRA export / chart / summary, resume).

Each rank writes OUT/rank<r>.pt: per step its local gradient, the reduced gradient and the adapter before the
step, and the final adapter. Rank 1 sees no face in step 1 (SKIP_STEP): its step is skipped locally, the
ranks apply rank 0's gradient, and under FSDP rank 1 still runs a (zero) backward with the others.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from personalvideo.scaleout.distributed import init_distributed, shard_blocks
from personalvideo.scaleout.export import write_comfyui_lora
from personalvideo.scaleout.run import RESUME_FILE, Rewards, train_identity
from personalvideo.training.adapter.lora import LoRAParameters
from personalvideo.training.loop.trainer import TrainSettings
from personalvideo.training.prompts import PromptBank
from tests.training.loop.toy_backend import C, ToyBackend, toy_identity

BLOCKS = 3
SKIP_RANK, SKIP_STEP = 1, 1


def identity_reward(rank: int, first_step: int):
    """toy_identity, except that rank SKIP_RANK finds no face in the frames of step SKIP_STEP."""
    calls = iter(range(2 * first_step, 10**6))  # two calls a step: the tuned frames, then the source frames

    def reward(frames):
        result = toy_identity(frames)
        if rank == SKIP_RANK and next(calls) // 2 == SKIP_STEP:
            return type(result)((frames * 0).sum(), torch.full_like(result.similarity, float("nan")), 0,
                                frames.shape[0])
        return result
    return reward


class ToyBlock(nn.Module):
    def __init__(self, up: nn.Parameter, down: nn.Parameter, scale: float, gen: torch.Generator):
        super().__init__()
        self.linear = nn.Linear(C, C).requires_grad_(False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(C, C, generator=gen) * 0.5)
            self.linear.bias.copy_(torch.randn(C, generator=gen) * 0.1)
        self.lora_up, self.lora_down, self.scale = up, down, scale  # the adapter's own Parameters, inside
        self.adapter_on = False

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.linear(h)
        if self.adapter_on:
            out = out + self.scale * (h @ self.lora_down.T) @ self.lora_up.T
        return torch.tanh(out)


class ToyBlocksModel(nn.Module):
    def __init__(self, params: LoRAParameters, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        pairs = params.pairs()
        self.blocks = nn.ModuleList(ToyBlock(*pairs[f"blocks.{i}.weight"], params.scale, gen) for i in range(BLOCKS))

    def denoise(self, x: torch.Tensor, sigma, adapter_on: bool) -> torch.Tensor:
        h = x.movedim(1, -1)
        for block in self.blocks:
            block.adapter_on = adapter_on
            h = block(h)
        return h.movedim(-1, 1)


class ToyScaleoutModel:
    """What scaleout.backends.build_backend returns, for the toy."""

    def __init__(self, settings: TrainSettings):
        self.params = LoRAParameters({f"blocks.{i}.weight": (C, C) for i in range(BLOCKS)}, settings.rank,
                                     settings.alpha, seed=settings.seed)
        self.transformer = ToyBlocksModel(self.params)
        self.backend = ToyBackend(self.transformer, settings.sampling_steps)

    def blocks_for_sharding(self):
        return list(self.transformer.blocks)

    def export_comfyui(self, path, metadata):
        tensors = {f"diffusion_model.{k}": v for k, v in self.params.lora_state_dict().items()}
        return write_comfyui_lora(path, tensors, 0.75, "toy", "", metadata)


def main(out: Path, steps: int, fsdp: bool) -> None:
    run = init_distributed(cpu=True)
    settings = TrainSettings(steps=steps, sampling_steps=8, learning_rate=5e-2, rank=2, alpha=2.0,
                             frames_per_reward=2, seed=0, save_every=1)
    model = ToyScaleoutModel(settings)
    if fsdp:
        assert shard_blocks(model.blocks_for_sharding(), model.params.parameters(), run) == BLOCKS
        assert all(type(b.linear.weight).__name__ == "DTensor" for b in model.transformer.blocks)
        assert all(type(p).__name__ == "Parameter" for p in model.params.parameters())
    trace = {"local": [], "reduced": [], "adapter_before": [], "skipped_local": [], "skipped": []}
    reduce = run.reduce_gradients

    def recording_reduce(params, skipped):
        trace["adapter_before"].append([p.detach().clone() for p in params.parameters()])
        trace["local"].append([torch.zeros_like(p) if p.grad is None else p.grad.clone()
                               for p in params.parameters()])
        trace["skipped_local"].append(skipped)
        skipped = reduce(params, skipped)
        trace["skipped"].append(skipped)
        trace["reduced"].append([p.grad.clone() for p in params.parameters()])
        return skipped

    run.reduce_gradients = recording_reduce
    resume_file = out / "toy" / RESUME_FILE
    first_step = 0
    if resume_file.exists():  # a resumed run: where it continues (the trainer reads the same header)
        with safe_open(str(resume_file), "pt") as f:
            first_step = int(f.metadata()["step"])
    bank = PromptBank(prompts=("a walks", "a runs", "a dances", "a sits"), negative="", subject="a")
    rewards = Rewards(identity_reward(run.rank, first_step))
    result = train_identity(model, bank, settings, rewards, run, out / "toy", "toy", resume=True)
    trace["final"] = [p.detach().clone() for p in model.params.parameters()]
    trace["prompts"] = [r.prompt for r in result.history]
    trace["resumed_from"] = result.resumed_from
    torch.save(trace, out / f"rank{run.rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), len(sys.argv) > 3 and sys.argv[3] == "fsdp")
