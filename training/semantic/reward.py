"""The semantic reward (SCR): HPSv2 scores of frames for a prompt, and the KL between score distributions.

HPSv2 / v2.1 is OpenCLIP ViT-H-14 with fine-tuned weights (model files ``HPS_v2_compressed.pt``,
``HPS_v2.1_compressed.pt``: a dict whose ``state_dict`` holds OpenCLIP keys). The model is built
from OpenCLIP's own config on the meta device (no random initialisation of 986 M parameters, no
download), checked key by key and shape by shape against the model file, and then takes the
file's tensors. Preprocessing (resize, centre crop, normalise) is torch, so gradients reach
the frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..devices import DeviceHolder
from ..logs import pack_logger

log = pack_logger(__name__)

HPS_ARCHITECTURE = "ViT-H-14"
# OpenCLIP's OPENAI_DATASET_MEAN / STD: what hpsv2 normalises with.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def build_clip(architecture: str = HPS_ARCHITECTURE, device: torch.device | str = "meta") -> nn.Module:
    """An OpenCLIP CLIP model from OpenCLIP's built-in (or added) config, by default without storage."""
    import open_clip
    from open_clip.model import CLIP

    cfg = open_clip.get_model_config(architecture)
    if cfg is None:
        raise ValueError(f"architecture: {architecture!r} is not an OpenCLIP model config; HPSv2 uses 'ViT-H-14'")
    cfg = dict(cfg)
    if cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {}):
        raise ValueError(f"architecture: {architecture!r} has a custom text tower; HPSv2 uses 'ViT-H-14'")
    with torch.device(device):
        return CLIP(**cfg)


def read_model_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of an HPS model file: ``.safetensors``, or ``.pt`` via ``torch.load(weights_only=True)``.

    A ``{"state_dict": {...}}`` wrapper and ``module.`` prefixes (DDP) are unwrapped.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"HPS model file: {path} does not exist; put HPSv2 model files in models/hpsv2/")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        sd = load_file(path)
    else:
        try:
            try:
                sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):
                    raise
                sd = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) file
        except Exception as e:  # unpickling refused or not a torch file
            raise ValueError(
                f"HPS model file {os.path.basename(path)}: cannot be read as a weights-only torch file ({e}). "
                "Expected HPS_v2_compressed.pt / HPS_v2.1_compressed.pt or a .safetensors export"
            ) from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"HPS model file {os.path.basename(path)}: holds no state dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def check_state_dict(sd: dict[str, torch.Tensor], model: nn.Module, name: str, architecture: str) -> None:
    """Raise ValueError listing missing, unexpected and wrongly shaped keys against ``model``."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = [f"{k}: {tuple(sd[k].shape)} (expected {expected[k]})"
             for k in expected if k in sd and tuple(sd[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} tensors of the wrong shape, e.g. {'; '.join(wrong[:3])}")
        if missing:
            parts.append(f"{len(missing)} keys missing, e.g. {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, e.g. {', '.join(unexpected[:3])}")
        raise ValueError(
            f"HPS model file {name}: not an OpenCLIP {architecture} model file: {'; '.join(parts)}. Expected "
            "HPS_v2_compressed.pt or HPS_v2.1_compressed.pt (OpenCLIP ViT-H-14) in models/hpsv2/"
        )


def _materialise(model: nn.Module, sd: dict[str, torch.Tensor], dtype: torch.dtype) -> nn.Module:
    model.load_state_dict(sd, strict=True, assign=True)
    # The causal text mask is a non-persistent buffer: not in model files, so still on meta.
    context = model.positional_embedding.shape[0]
    model.attn_mask = torch.full((context, context), float("-inf")).triu_(1)
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_meta:
            raise ValueError(f"internal: {name} was not set from the model file")
    return model.to(dtype=dtype).eval().requires_grad_(False)


@dataclass
class _TextCache:
    prompt: str
    features: torch.Tensor


class SemanticRewardModel:
    """HPS scorer: ``score(frames, prompt)`` -> [F] = cos(image, text), the number hpsv2's ``score`` reports
    (``image_features @ text_features.T`` of unit-norm features; the logit scale is not applied)."""

    def __init__(self, clip: nn.Module, architecture: str, name: str = "", load_device="cpu",
                 offload_device="cpu", dtype: torch.dtype = torch.float32):
        import open_clip

        self.architecture = architecture
        self.name = name or architecture
        self.holder = DeviceHolder(clip, load_device, offload_device, dtype)
        self.tokenizer = open_clip.get_tokenizer(architecture)
        size = clip.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self._text: _TextCache | None = None

    def __repr__(self) -> str:
        return f"SemanticRewardModel({self.name}, {self.architecture}, {self.holder.dtype})"

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames [F, H, W, 3] in [0, 1] -> normalised [F, 3, S, S], as hpsv2 scores images.

        hpsv2 builds its transform with ``resize_longest_max=True`` (open_clip's ResizeMaxSize): the longest
        side is resized (bicubic) to S and the rest is padded with black, centred, before normalising. So
        the whole frame is seen, including its sides (a centre crop would drop ~44% of a 16:9 frame).
        """
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames: got shape {list(frames.shape)}, expected [F, H, W, 3] RGB in [0, 1]; pass the "
                             "frames as a ComfyUI IMAGE batch")
        x = frames.permute(0, 3, 1, 2).float()
        h, w = x.shape[-2:]
        size = self.image_size
        s = size / max(h, w)
        nh, nw = min(size, max(1, round(h * s))), min(size, max(1, round(w * s)))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=s < 1)
        ph, pw = size - nh, size - nw
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=0.0)
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def text_features(self, prompt: str, device: torch.device) -> torch.Tensor:
        """Unit-norm text embedding [1, E] of ``prompt`` (cached for the last prompt; no gradient)."""
        if self._text is None or self._text.prompt != prompt:
            with torch.no_grad(), self.holder.on_device(device) as clip:
                tokens = self.tokenizer([prompt]).to(device)
                feats = F.normalize(clip.encode_text(tokens).float(), dim=-1).cpu()
            self._text = _TextCache(prompt, feats)
        # A copy, so that a cache filled under torch.inference_mode (an earlier scoring node) can still be
        # saved by autograd when training scores frames with gradient.
        return self._text.features.to(device, copy=True)

    def image_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings [F, E] of frames [F, H, W, 3] in [0, 1] (differentiable w.r.t. frames)."""
        with self.holder.on_device(frames.device) as clip:
            image = clip.encode_image(self.preprocess(frames).to(self.holder.dtype))
        return F.normalize(image.float(), dim=-1)

    def score(self, frames: torch.Tensor, prompt: str) -> torch.Tensor:
        """HPS score of each frame [F, H, W, 3] for ``prompt`` -> [F] (differentiable w.r.t. frames)."""
        text = self.text_features(prompt, frames.device)
        return (self.image_features(frames) @ text.T).squeeze(-1)


def scr_kl_loss(tuned_scores: torch.Tensor, source_scores: torch.Tensor, temperature: float = 100.0,
                detach_source: bool = True) -> torch.Tensor:
    """SCR loss KL(V_T || V_S) with V = softmax over the M frames of ``temperature * scores`` (T: the tuned
    model, S: the frozen source model).

    ``temperature`` multiplies the scores (an inverse temperature): HPS scores are cosine-like
    (about 0.2-0.35), so a plain softmax would be nearly uniform; 100 is CLIP's logit scale. The
    source scores come from the frozen source model and are detached by default.
    """
    if tuned_scores.shape != source_scores.shape or tuned_scores.ndim != 1:
        raise ValueError(f"scores: tuned {list(tuned_scores.shape)} and source {list(source_scores.shape)} "
                         "must both be [M] (one score per sampled frame)")
    if tuned_scores.shape[0] < 2:
        raise ValueError(f"frames_per_reward: got {tuned_scores.shape[0]} frame, expected at least 2: SCR compares "
                         "the distribution of scores over frames, which is constant for one frame")
    if temperature <= 0:
        raise ValueError(f"temperature: got {temperature}, expected a positive number (default 100)")
    source = source_scores.detach() if detach_source else source_scores
    log_t = F.log_softmax(tuned_scores.float() * temperature, dim=0)
    log_s = F.log_softmax(source.float() * temperature, dim=0)
    return (log_t.exp() * (log_t - log_s)).sum()


def default_dtype(device: torch.device | str) -> torch.dtype:
    """Half precision on CUDA (ViT-H-14 is 986 M parameters), float32 on CPU."""
    from ..devices import half_dtype_for

    return half_dtype_for(device)


def load_semantic_reward_model(path: str | os.PathLike, architecture: str = HPS_ARCHITECTURE,
                               load_device: torch.device | str = "cpu", offload_device: torch.device | str = "cpu",
                               dtype: torch.dtype | None = None) -> SemanticRewardModel:
    """Load an HPSv2 / v2.1 model file (or any OpenCLIP model file of ``architecture``)."""
    name = os.path.basename(os.fspath(path))
    sd = read_model_file(path)
    model = build_clip(architecture, "meta")
    check_state_dict(sd, model, name, architecture)
    dtype = dtype or default_dtype(load_device)
    clip = _materialise(model, sd, dtype)
    log.info("semantic reward: %s as OpenCLIP %s in %s", name, architecture, dtype)
    return SemanticRewardModel(clip, architecture, name, load_device, offload_device, dtype)
