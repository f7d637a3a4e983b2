"""One rank of the FSDP2 load check, launched by tests/scaleout/test_distributed_fsdp_load.py with
``torchrun --nproc_per_node 2 -m tests.scaleout.dist_build_worker OUT`` (from the repository root) on the CPU (gloo).

Builds each case's model as the train command does with ``[compute] fsdp = true`` (scaleout.run.build_model):
the tiny random diffusers models of scaleout/tiny.py (Wan 2.2 A14B with two experts, HunyuanVideo, AnimateDiff)
and a tiny Wan pipeline saved to a folder (diffusers' from_pretrained path). Writes OUT/rank<r>.pt with, per case:

- ``constructed``: every transformer / UNet constructed during the build, with the bytes of its blocks'
  parameters that held memory when its constructor returned (a tiny model draws its weights there; an empty
  build holds none) and whether it is still alive after the build (rank 0's whole copy must be let go). The
  folder case is loaded by from_pretrained, which fills the weights after construction: only its equality counts;
- ``held``: right after the build, before any step, per transformer: the bytes of its blocks' parameters this rank
  holds (its FSDP2 shards) and the blocks' full bytes;
- ``equal``: the sharded model equals a whole build of the same spec: every weight (gathered), the adapter, and
  a video sampled without gradient (so the sharded forward runs, the high-noise expert's too).
"""

from __future__ import annotations

import functools
import gc
import sys
import weakref
from pathlib import Path

import torch

from personalvideo.scaleout.backends import ModelSpec
from personalvideo.scaleout.distributed import init_distributed
from personalvideo.scaleout.run import build_model
from personalvideo.training.loop.trainer import TrainSettings

BLOCKS = {"WanTransformer3DModel": ("blocks",),
          "HunyuanVideoTransformer3DModel": ("transformer_blocks", "single_transformer_blocks"),
          "UNetMotionModel": ("down_blocks", "up_blocks")}
SIZE = dict(width=16, height=16, num_frames=5, negative_prompt="blurry")
SETTINGS = dict(rank=4, alpha=4.0, sampling_steps=8, cfg=3.0, gate_start=0.75)
constructed: list[dict] = []


def kind(model: torch.nn.Module) -> str:
    """The diffusers class of ``model`` (fully_shard turns the root into an ``FSDP<class>`` subclass)."""
    return next(c.__name__ for c in type(model).__mro__ if c.__name__ in BLOCKS)


def block_params(model: torch.nn.Module):
    return [p for name in BLOCKS[kind(model)] for block in getattr(model, name) for p in block.parameters()]


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def record_constructions() -> None:
    """Wrap the constructors of the three model classes: what each holds when its constructor returns."""
    import diffusers

    for name in BLOCKS:
        cls = getattr(diffusers, name)
        original = cls.__init__

        @functools.wraps(original)
        def init(self, *args, _original=original, _cls=cls, **kwargs):
            _original(self, *args, **kwargs)
            if type(self) is _cls:
                real = sum(nbytes(p) for p in block_params(self) if not p.is_meta)
                constructed.append({"class": _cls.__name__, "real_block_bytes": real, "ref": weakref.ref(self)})

        cls.__init__ = init


def transformers(model) -> list[torch.nn.Module]:
    high = getattr(model.backend, "high_noise", None)
    return [model.transformer] + ([high] if high is not None else [])


def gathered(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in module.state_dict().items()}


def source_video(model) -> torch.Tensor:
    with torch.no_grad():
        return model.backend.run("a man", 0, lambda denoise, sample, x, sigmas, **_:
                                 sample(lambda latent, sigma: denoise(latent, sigma, False), x))


def check(spec: ModelSpec, run) -> dict:
    settings = TrainSettings(**SETTINGS)
    constructed.clear()
    model = build_model(spec, settings, run, torch.float32, fsdp=True)
    gc.collect()
    result = {
        "constructed": [{"class": c["class"], "real_block_bytes": c["real_block_bytes"],
                         "alive": c["ref"]() is not None} for c in constructed],
        "held": [{"class": kind(t),
                  "local": sum(nbytes(p.to_local() if hasattr(p, "to_local") else p) for p in block_params(t)),
                  "full": sum(nbytes(p) for p in block_params(t))} for t in transformers(model)],
        "sharded": [type(p).__name__ == "DTensor" for t in transformers(model) for p in block_params(t)
                    if not p.requires_grad],
    }
    whole = build_model(spec, settings, run, torch.float32, fsdp=False)
    result["equal"] = {
        "weights": all(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
                       for a, b in zip(map(gathered, transformers(model)), map(gathered, transformers(whole)),
                                       strict=True)),
        "adapter": all(torch.equal(v, whole.params.lora_state_dict()[k])
                       for k, v in model.params.lora_state_dict().items()),
        "video": torch.equal(source_video(model), source_video(whole)),
    }
    return result


def main(out: Path) -> None:
    run = init_distributed(cpu=True)
    record_constructions()
    cases = {"wan_a14b": ModelSpec("wan", tiny=True, expert_boundary=0.875, **SIZE),
             "hunyuan_video": ModelSpec("hunyuan_video", tiny=True, layers="attention+mlp", **SIZE),
             "animatediff": ModelSpec("animatediff", tiny=True, **(SIZE | {"num_frames": 3}))}
    folder = out / "wan_folder"
    if run.is_main:
        from personalvideo.scaleout import tiny

        tiny.wan_pipeline().save_pretrained(folder)
    run.barrier()
    cases["wan_folder"] = ModelSpec("wan", path=str(folder), text_tokens=16, **SIZE)
    torch.save({name: check(spec, run) for name, spec in cases.items()}, out / f"rank{run.rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
