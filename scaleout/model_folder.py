"""The ``[model] path`` of a config checked before anything loads: a local diffusers pipeline folder of the family's
pipeline with every part the backend loads. Plain JSON reads (no diffusers import), so a wrong path fails in a
second with the key named, not after the reward models load, in diffusers' words or as a Hub download attempt.
"""

from __future__ import annotations

import json
from pathlib import Path

# per family: the pipeline class model_index.json names, and the parts the backend loads (scaleout/backends/)
PIPELINES = {
    "wan": ("WanPipeline", ("vae", "text_encoder", "tokenizer", "scheduler")),
    "hunyuan_video": ("HunyuanVideoPipeline", ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer",
                                               "tokenizer_2", "scheduler")),
    "animatediff": ("AnimateDiffPipeline", ("unet", "vae", "text_encoder", "tokenizer", "scheduler")),
}
WAN_TRANSFORMERS = ("transformer", "transformer_2")  # Wan 2.2 A14B: both experts; Wan 2.1 / 2.2 5B: the first
WEIGHTS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
NO_WEIGHTS = ("Tokenizer", "Scheduler", "Processor", "FeatureExtractor")  # classes of parts without weights


def check_model_folder(path: Path, family: str) -> list[str]:
    """Problems of ``path`` as the folder of a ``family`` model, each naming the file or part (empty: usable)."""
    if not path.is_dir():
        return [f"{path} is not a folder; expected a diffusers pipeline folder (model_index.json and its "
                "subfolders). Models are not downloaded at run time: download the folder first (e.g. "
                "`huggingface-cli download Wan-AI/Wan2.1-T2V-1.3B-Diffusers --local-dir <folder>`)"]
    index_file = path / "model_index.json"
    if not index_file.is_file():
        return [f"{path} has no model_index.json; expected a diffusers pipeline folder (the whole model "
                "repository, not one subfolder or a single .safetensors file: for ComfyUI's single-file models, "
                "train with the Train Identity Adapter node instead)"]
    try:
        index = json.loads(index_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return [f"{index_file} is not valid JSON ({e}); the download may be incomplete"]
    pipeline, parts = PIPELINES[family]
    problems = []
    if index.get("_class_name") != pipeline:
        problems.append(f"{index_file} names the pipeline {index.get('_class_name')!r}, expected {pipeline!r} for "
                        f"family {family!r}; set [model] family to this folder's model, or path to a {family} folder")
    listed = {k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v and v[-1]}
    wanted = set(parts) | ({n for n in WAN_TRANSFORMERS if n in listed} if family == "wan" else set())
    if family == "wan" and not listed & set(WAN_TRANSFORMERS):
        problems.append(f"{index_file} lists no transformer; expected transformer (and transformer_2 for Wan 2.2 A14B)")
    for part in sorted(wanted):
        folder = path / part
        if part not in listed:
            problems.append(f"{index_file} lists no {part}; expected the {pipeline} parts {', '.join(parts)}")
        elif not folder.is_dir():
            problems.append(f"{folder} is missing; the download may be incomplete")
        elif not any(kind in index[part][-1] for kind in NO_WEIGHTS) \
                and not any(next(folder.glob(p), None) for p in WEIGHTS):
            problems.append(f"{folder} has no weights (*.safetensors or *.bin); the download may be incomplete")
    return problems
