"""diffusers models as the trainer's ``Backend``: the interface between the backends and the distributed runner.

The distributed runner (scaleout/run.py, scaleout/distributed.py) calls only this::

    model = build_backend(spec, settings, device, dtype, shard)  # -> ScaleoutModel (shard: the run, or None)
    Trainer(model.backend, model.params, prompts, settings, identity_reward=..., ...)   training/loop/trainer.py
    model.export_comfyui(path, metadata)                      # rank 0: the adapter as a ComfyUI-native LoRA file

- ``shard`` (``[compute] fsdp`` with 2+ processes): the transformer(s) are built with their parameters on
  ``meta``, get the adapter, are FSDP2-sharded per block, and only then load their weights from the whole copy
  that rank 0 alone loads on the CPU (flow_backend.place -> scaleout/distributed.py's load_sharded); Wan 2.2
  A14B: both experts. The VAE and text encoders load whole on every rank (small next to the transformer).

- ``ModelSpec``: which model (family, diffusers folder or ``tiny=True``), the video size and the negative prompt.
  Wan 2.2 A14B: ``path`` is diffusers' two-expert pipeline folder (``transformer`` = high-noise expert,
  ``transformer_2`` = low-noise expert, which alone trains, as on the node side); the boundary is
  ``expert_boundary``, else the folder's ``boundary_ratio``, else 0.875 (training/adapter/experts.py). Tiny:
  ``expert_boundary`` set = two tiny experts (low-noise seeded ``seed``, high-noise ``seed + 1``).
- ``ScaleoutModel.backend`` implements ``training.loop.trainer.Backend`` (run, decode, num_frames).
- ``ScaleoutModel.params`` is the trainable LoRA with ``training.adapter.lora.LoRAParameters``' interface (keys,
  pairs(), parameters(), lora_state_dict(), load_lora_state_dict(), rank, alpha, scale) backed by peft's
  lora_A / lora_B weights (scaleout/peft_adapter.py; a plain view: it registers no parameters of its own, the
  weights live in ``transformer``). Wan: its keys are ComfyUI's native weight names
  (``diffusion_model.blocks.0.self_attn.q.weight``), so resume files and gradients line up with the node side;
  HunyuanVideo and AnimateDiff: diffusers' module names (``transformer_blocks.0.attn.to_q.weight``). Which layers:
  the trainer node's rule on the native names (scaleout/export's ``native_targets``); AnimateDiff, which core
  ComfyUI does not run, its spatial attention (export/animatediff.py).
- ``ScaleoutModel.transformer`` is the diffusers model (peft layers inside); ``block_lists`` names its lists of
  block modules, the ones FSDP2 shards (Wan: ``blocks``; HunyuanVideo: ``transformer_blocks`` +
  ``single_transformer_blocks``; AnimateDiff: the UNet's ``down_blocks`` + ``up_blocks``). The LoRA weights sit
  inside the blocks: ``fully_shard`` per block shards them too unless told to leave them out (they are).
- ``ScaleoutModel.backend.encode_prompts(texts)`` encodes the bank's prompts and the negative once (call it before
  training; the text encoders are not needed afterwards). ``backend.checkpoint_blocks`` (default True) switches
  block checkpointing; the gate state of each block call is captured for its recomputation.
- ``ScaleoutModel.export_comfyui(path, metadata)`` writes the adapter atomically in ComfyUI-native keys with the
  pack's metadata (training/adapter/files.py); ``metadata`` adds/overrides ``personalvideo.*`` fields.

``build_backend`` imports diffusers/peft lazily (per family), so importing this module is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ...training.adapter.experts import check_boundary

FAMILIES = ("wan", "hunyuan_video", "animatediff")


@dataclass
class ModelSpec:
    family: str  # one of FAMILIES
    path: str | None = None  # a diffusers folder (a pipeline's); None with tiny=True: scaleout/tiny.py
    tiny: bool = False  # tiny random model built in code (tests, benchmarks)
    seed: int = 0  # seed of the tiny model's random weights
    expert_boundary: float | None = None  # A14B: fraction of the timestep range (0.875); None: one model
    width: int = 832
    height: int = 480
    num_frames: int = 81
    negative_prompt: str = ""
    shift: float | None = None  # flow shift of the sigma schedule; None: the family's ComfyUI default (Wan 8)
    layers: str = "attention"  # "attention" or "attention+mlp", as the trainer node's input
    text_tokens: int | None = None  # text encoder's max_sequence_length; None: the family's (Wan 512), tiny 16
    guidance: float = 6.0  # HunyuanVideo's embedded guidance (ComfyUI's FluxGuidance in its template)
    tiny_options: dict = field(default_factory=dict)  # size overrides for the tiny model (benchmarks)

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"model family: got {self.family!r}, expected one of {FAMILIES}")
        if self.path is None and not self.tiny:
            raise ValueError(f"model path: got none for {self.family}, expected a diffusers folder (or tiny=True "
                             "for the tiny random test model)")
        if self.expert_boundary is not None:
            check_boundary(self.expert_boundary)
        if self.layers not in ("attention", "attention+mlp"):
            raise ValueError(f"layers: got {self.layers!r}, expected 'attention' or 'attention+mlp'")
        if self.text_tokens is None:
            self.text_tokens = 16 if self.tiny else {"wan": 512, "hunyuan_video": 256, "animatediff": 77}[self.family]


@dataclass
class ScaleoutModel:
    backend: object  # training.loop.trainer.Backend
    params: torch.nn.Module  # LoRAParameters-compatible view of peft's weights
    transformer: torch.nn.Module
    exporter: Callable[[torch.nn.Module], dict[str, torch.Tensor]]  # params -> ComfyUI-native LoRA tensors
    base_model: str  # what personalvideo.base_model records (ComfyUI's model class name)
    gate_start: float
    expert: str = ""  # "low_noise" for Wan 2.2 A14B
    block_lists: tuple[str, ...] = ("blocks",)
    adapted: str = ""  # which layers the adapter has, for the run's summary (training/adapter/targets.py)
    expert_boundary: float | None = None  # the boundary used (Wan 2.2 A14B); None: one model

    def export_comfyui(self, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
        from .. import export

        # rank/alpha as trained (a fused HunyuanVideo layer has rank n·r, alpha n·alpha: the same scale)
        trained = {"rank": str(self.params.rank), "alpha": f"{self.params.alpha:g}"}
        return export.write_comfyui_lora(path, self.exporter(self.params), self.gate_start,
                                         self.base_model, self.expert, trained | (metadata or {}))


def build_backend(spec: ModelSpec, settings, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32, shard=None) -> ScaleoutModel:
    """The model of ``spec`` with a fresh trainable adapter (``settings``: training.loop.trainer.TrainSettings).

    ``shard``: the run's ``scaleout.distributed.DistributedRun`` to FSDP2-shard the transformer(s) across its
    ranks while loading (2+ processes); None: every part whole on ``device``.
    """
    if spec.family == "wan":
        from .wan import build_wan as build
    elif spec.family == "hunyuan_video":
        from .hunyuan import build_hunyuan as build
    else:
        from .animatediff import build_animatediff as build
    return build(spec, settings, torch.device(device), dtype, shard)
