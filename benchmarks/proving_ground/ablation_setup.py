"""What one ablation run is: its arms, and ``Setup`` (model files, reward packs, prompts, photos, seeds, sampling and
training settings)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# arm -> (gate start, SCR on); None: no adapter. "all steps" on a two-expert model starts at the low-noise expert's
# first step (the adapter lives on that expert only; the trainer refuses an earlier gate).
ARMS = {"base": None, "gate 0.75": (0.75, True), "all steps": (0.0, True), "gate 0.75, no SCR": (0.75, False)}


@dataclass(frozen=True)
class Setup:
    """One ablation: the same prompts, seeds and training settings for every arm."""

    diffusion_model: Path  # Wan 2.2 A14B: the low-noise expert (the one the adapter trains on)
    vae: Path
    text_encoders: tuple[Path, ...] = ()  # one file: CLIPLoader; two: DualCLIPLoader; none: the dev stand-in
    text_encoder_type: str = "wan"  # CLIPLoader's / DualCLIPLoader's type (wan, hunyuan_video, ...)
    standin_text: tuple[int, int, int] = (4096, 0, 16)  # dev stand-in: width, pooled width, tokens
    high_noise_model: Path | None = None  # Wan 2.2 A14B's high-noise expert
    expert_boundary: float = 0.875  # timestep fraction where the low-noise expert takes over (official T2V)
    weight_dtype: str = "default"
    pack: Path | None = None  # insightface pack folder (ArcFace + SCRFD): the identity reward and Face Sim
    eval_pack: Path | None = None  # optional second insightface pack: a second ArcFace Face Sim
    hps: Path | None = None  # HPSv2 checkpoint: the semantic reward (SCR)
    hps_architecture: str = "ViT-H-14"
    clip_t: Path | None = None  # OpenCLIP checkpoint for CLIP-T (evaluation only)
    clip_t_architecture: str = "ViT-H-14"
    dlib: Path | None = None  # folder with dlib's .dat files: the independent Face Sim
    photos: tuple[Path, ...] = ()  # reference photos of the person (1 to 4)
    prompts: tuple[str, ...] = ()  # evaluation prompts
    train_prompts: tuple[str, ...] = ()  # the trainer's prompt bank (empty: the evaluation prompts)
    built_in_prompts: bool = False  # add the pack's 66 built-in prompts (with ``subject``) to the bank
    subject: str = ""
    negative: str = ""
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 20
    cfg: float = 5.0
    shift: float | None = None  # ModelSamplingSD3 on every expert; None: the model file's default
    sampler: str = "euler"
    scheduler: str = "simple"
    width: int = 480
    height: int = 272
    frames: int = 33
    fps: float = 16.0
    arms: tuple[str, ...] = tuple(ARMS)
    # training, the same in every trained arm (None: the sampling value)
    train_steps: int = 200
    learning_rate: float = 1e-4
    rank: int = 16
    alpha: float = 16.0
    layers: str = "attention"
    train_sampling_steps: int | None = None
    train_cfg: float | None = None
    train_width: int | None = None
    train_height: int | None = None
    train_frames: int | None = None
    frames_per_reward: int = 4
    scr_weight: float = 1.0
    scr_temperature: float = 100.0
    max_grad_norm: float = 1.0
    backprop_last_k: int = 0
    checkpoint_blocks: bool = True
    train_seed: int = 0
    train_face_evaluator: bool = False  # dlib also watches every training step (independent curve; slower)

    def __post_init__(self):
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ValueError(f"arms: got {list(self.arms)}, expected some of {list(ARMS)}")
        if not self.prompts or not self.seeds:
            raise ValueError(f"prompts / seeds: got {len(self.prompts)} prompts and {len(self.seeds)} seeds, "
                             "expected at least one of each")
        if not 1 <= len(self.photos) <= 4:
            raise ValueError(f"photos: got {len(self.photos)}, expected 1 to 4 photos of the person")
        if self.pack is None:
            raise ValueError("pack: got none, expected an insightface pack folder (e.g. models/insightface/models/"
                             "antelopev2) for the identity reward and Face Sim")
        if len(self.text_encoders) > 2:
            raise ValueError(f"text encoders: got {len(self.text_encoders)} files, expected 1 (CLIPLoader), "
                             "2 (DualCLIPLoader) or none (the dev stand-in)")
        scr_arms = [a for a in self.arms if ARMS[a] and ARMS[a][1]]
        if scr_arms and self.hps is None:
            raise ValueError(f"hps: got none, but the arms {scr_arms} train with the semantic reward (SCR); give "
                             "an HPSv2 checkpoint (HPS_v2.1_compressed.pt) or leave those arms out with --arms")
        if self.high_noise_model is not None and self.shift is None:
            raise ValueError("shift: got none with a high-noise expert; the expert split is computed from the "
                             "sigma schedule, so give the shift both experts sample with (Wan 2.2 A14B: 8)")

    def train_value(self, name: str):
        own = getattr(self, "train_" + name)
        return own if own is not None else getattr(self, {"sampling_steps": "steps"}.get(name, name))
