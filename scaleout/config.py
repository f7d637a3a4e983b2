"""The scale-out trainer's TOML configuration: the node's training settings, the model, the reward models, the
identities (one adapter each) and the output folder.

Complete examples with every field documented: examples/scaleout/wan22_a14b.toml, examples/scaleout/hunyuan_video.toml.
A short one (relative paths are relative to the config file's folder)::

    [train]                   # TrainSettings: the trainer node's settings, same names and defaults
    steps = 400
    learning_rate = 1e-4
    rank = 16
    gate_start = 0.75

    [model]                   # ModelSpec (scaleout/backends): the diffusers model
    family = "wan"            # "wan" | "hunyuan_video" | "animatediff"
    path = "/models/Wan2.1-T2V-1.3B-Diffusers"   # a local diffusers folder (checked before anything loads)
    width = 480
    height = 272
    num_frames = 33
    # expert_boundary = 0.9   # Wan 2.2 A14B (a two-expert folder) only; default: the folder's boundary_ratio, else
                              # 0.875 (training/adapter/experts.py). The resume file records it.

    [rewards]
    insightface_pack = "/models/insightface/models/antelopev2"   # SCRFD + ArcFace .onnx files
    hpsv2 = "/models/hpsv2/HPS_v2.1_compressed.pt"                 # optional: without it SCR is off

    [prompts]
    subject = "a woman"       # fills {subject} in the prompts; an identity may give its own

    [[identities]]
    name = "alice"
    photos = ["photos/alice_1.jpg", "photos/alice_2.jpg"]

    [output]
    folder = "runs"           # runs/<identity>/: resume file, ComfyUI LoRA, training curve, summary

    [compute]
    fsdp = false              # FSDP2-shard the frozen base model's blocks across the ranks (2+ processes)
    dtype = "auto"            # the base model's dtype: bfloat16 on CUDA (float16 without bf16), float32 on CPU

Unknown sections and keys are errors that name the key and list the valid ones.
"""

from __future__ import annotations

import math
import re
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (ComfyUI's oldest): tomli is the same parser; the train extra installs it
    import tomli as tomllib

from ..training.loop.trainer import TrainSettings
from ..training.semantic.reward import HPS_ARCHITECTURE


@dataclass
class RewardConfig:
    insightface_pack: Path  # folder with an SCRFD detector and an ArcFace recognizer (.onnx), as for the node
    det_size: int = 640
    det_threshold: float = 0.5
    hpsv2: Path | None = None  # HPSv2 / v2.1 model file (.pt or .safetensors); None: the semantic reward is off
    hps_architecture: str = HPS_ARCHITECTURE
    augmentations: int = 8  # reference: jittered views per photo (Load Reference Faces' settings)
    crop_jitter: float = 0.05
    colour_jitter: float = 0.1


@dataclass
class PromptConfig:
    subject: str = ""  # fills {subject}; each identity may set its own
    prompts: list[str] = field(default_factory=list)  # the user's prompts, added to the built-in ones
    use_built_in: bool = True


@dataclass
class Identity:
    name: str  # names the output subfolder and the adapter file
    photos: list[Path]
    subject: str = ""  # overrides [prompts] subject


@dataclass
class OutputConfig:
    folder: Path
    resume: bool = True  # continue each identity from its resume file when there is one (same settings)


DTYPES = ("auto", "bfloat16", "float16", "float32")


@dataclass
class ComputeConfig:
    fsdp: bool = False  # FSDP2 fully_shard per block of the frozen base model (only with 2+ processes)
    cpu: bool = False  # train on the CPU (gloo) even when CUDA is available
    dtype: str = "auto"  # one of DTYPES: the frozen base model's weights; the adapter is always float32


@dataclass
class Config:
    train: TrainSettings
    model: typing.Any  # scaleout.backends.ModelSpec
    rewards: RewardConfig
    identities: list[Identity]
    output: OutputConfig
    prompts: PromptConfig = field(default_factory=PromptConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    source: Path | None = None  # the TOML file


# Ranges of the [train] values (the node's input ranges, where it has one).
LIMITS = {
    "steps": (1, None), "learning_rate": (1e-12, 1.0), "rank": (1, 1024), "alpha": (1e-6, None),
    "gate_start": (0.0, 1.0), "sampling_steps": (2, None), "cfg": (1.0, None), "frames_per_reward": (1, None),
    "icr_weight": (0.0, None), "scr_weight": (0.0, None), "scr_temperature": (1e-6, None), "seed": (0, 2**31 - 1),
    "save_every": (0, None), "max_grad_norm": (0.0, None), "backprop_last_k": (0, None),
}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names it, what was given and what is expected."""


def _check_type(where: str, value, kind):
    """``value`` as ``kind`` (a resolved annotation), or ConfigError naming ``where``."""
    args = typing.get_args(kind)
    if type(None) in args:  # X | None: TOML has no null, so the key is simply left out for None
        kind = next(a for a in args if a is not type(None))
    origin = typing.get_origin(kind)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: got {value!r}, expected a list")
        return [_check_type(f"{where}[{i}]", v, typing.get_args(kind)[0]) for i, v in enumerate(value)]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is Path and isinstance(value, str):
        return Path(value)
    if kind in (int, float, str, bool) and type(value) is not kind:
        raise ConfigError(f"{where}: got {value!r} ({type(value).__name__}), expected {kind.__name__}")
    return value


def _build(cls, table, section: str, exclude: dict[str, str] | None = None):
    """``cls(**table)`` with unknown keys, missing required keys and wrong types refused by name."""
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}]: got {table!r}, expected a table of key = value lines")
    exclude = exclude or {}
    valid = [f.name for f in fields(cls) if f.name not in exclude and f.name != "source"]
    for key in table:
        if key in exclude:
            raise ConfigError(f"[{section}] {key}: {exclude[key]}")
        if key not in valid:
            raise ConfigError(f"[{section}] {key}: unknown key; valid keys are {', '.join(valid)}")
    hints = typing.get_type_hints(cls)
    missing = [f.name for f in fields(cls) if f.name in valid and f.name not in table
               and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise ConfigError(f"[{section}]: missing {', '.join(missing)} (required)")
    values = {k: _check_type(f"[{section}] {k}", v, hints[k]) for k, v in table.items()}
    try:
        return cls(**values)
    except ValueError as e:  # the dataclass's own checks (ModelSpec: family, path, layers)
        raise ConfigError(f"[{section}] {e}") from e


def _resolve(base: Path, path: Path | None, where: str, want_dir: bool) -> Path | None:
    if path is None:
        return None
    full = (base / path).expanduser().resolve() if not path.is_absolute() else path
    ok = full.is_dir() if want_dir else full.is_file()
    if not ok:
        kind = "a folder" if want_dir else "a file"
        raise ConfigError(f"{where}: {full} is not {kind}; expected an existing {kind.split()[1]} (relative paths "
                          f"are relative to the config file's folder {base})")
    return full


def _model_folder(base: Path, path: Path, family: str) -> Path:
    """``[model] path`` resolved like every path of the file and checked to be a ``family`` diffusers folder."""
    from .model_folder import check_model_folder

    full = (base / path.expanduser()).resolve()  # an absolute path stays itself
    problems = check_model_folder(full, family)
    if problems:
        where = f" (relative paths are relative to the config file's folder {base})" if not path.is_absolute() else ""
        raise ConfigError("[model] path: " + "; ".join(problems) + where)
    return full


def _check_train(settings: TrainSettings) -> None:
    for key, (lo, hi) in LIMITS.items():
        value = getattr(settings, key)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"[train] {key}: got {value}, expected a finite number")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            span = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise ConfigError(f"[train] {key}: got {value}, expected a value {span}")


def load_config(path: str | Path, model_spec=None) -> Config:
    """Read and check a TOML config. ``model_spec``: the model table's dataclass (default: the backends'
    ``ModelSpec``). Raises ConfigError (a ValueError) or FileNotFoundError naming the key or path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config: {path} does not exist; pass the path of a .toml file")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config {path}: not valid TOML ({e})") from e
    if model_spec is None:
        from .backends import ModelSpec as model_spec
    sections = [f.name for f in fields(Config) if f.name != "source"]
    for key in raw:
        if key not in sections:
            raise ConfigError(f"config {path}: unknown section [{key}]; valid sections are {', '.join(sections)}")
    for required in ("model", "rewards", "identities", "output"):
        if required not in raw:
            raise ConfigError(f"config {path}: missing section [{required}] (see scaleout/config.py for an example)")
    base = path.parent.resolve()
    train = _build(TrainSettings, raw.get("train", {}), "train", exclude={
        "expert_boundary": "set it in [model], where the two-expert (Wan 2.2 A14B) folder is",
        "loss_scaling": "decided from the model's dtype, not configured",
        "checkpoint_every": "renamed save_every (write the resume file every K steps)",
        "expert_switch_step": "the scale-out trainer splits the experts at [model] expert_boundary; the switch step "
                              "is the ComfyUI trainer node's input (a graph's first KSamplerAdvanced end_at_step)"})
    _check_train(train)
    model = _build(model_spec, raw["model"], "model")
    if getattr(model, "path", None) is not None and not getattr(model, "tiny", False):
        model.path = str(_model_folder(base, Path(model.path), model.family))
    # the training settings carry the boundary (the resume file must match it); a two-expert folder without one in
    # the config gets its own when the model is built (train.train_all)
    train.expert_boundary = getattr(model, "expert_boundary", None)
    rewards = _build(RewardConfig, raw["rewards"], "rewards")
    rewards.insightface_pack = _resolve(base, rewards.insightface_pack, "[rewards] insightface_pack", True)
    rewards.hpsv2 = _resolve(base, rewards.hpsv2, "[rewards] hpsv2", False)
    if not isinstance(raw["identities"], list) or not raw["identities"]:
        raise ConfigError("[[identities]]: expected at least one [[identities]] table with name and photos")
    identities = [_build(Identity, t, f"identities {i + 1}") for i, t in enumerate(raw["identities"])]
    names = [i.name for i in identities]
    for ident in identities:
        if not NAME.match(ident.name):
            raise ConfigError(f"[[identities]] name: got {ident.name!r}, expected a plain file name such as "
                              "'alice' (letters, digits, _ . -)")
        if not ident.photos:
            raise ConfigError(f"[[identities]] {ident.name}: photos is empty; expected at least one photo")
        ident.photos = [_resolve(base, p, f"[[identities]] {ident.name} photos", False) for p in ident.photos]
    if len(set(names)) != len(names):
        raise ConfigError(f"[[identities]] name: got {names}, expected different names (one folder each)")
    output = _build(OutputConfig, raw["output"], "output")
    output.folder = output.folder if output.folder.is_absolute() else (base / output.folder).resolve()
    prompts = _build(PromptConfig, raw.get("prompts", {}), "prompts")
    compute = _build(ComputeConfig, raw.get("compute", {}), "compute")
    if compute.dtype not in DTYPES:
        raise ConfigError(f"[compute] dtype: got {compute.dtype!r}, expected one of {', '.join(DTYPES)}")
    return Config(train, model, rewards, identities, output, prompts, compute, path.resolve())
