"""The one module that knows ComfyUI's model folders (the only user of folder_paths)."""

from __future__ import annotations

import os

import folder_paths

CATEGORY = "PersonalVideo"


def lora_names() -> list[str]:
    """LoRA files under every registered ``loras`` folder, as ComfyUI lists them."""
    return folder_paths.get_filename_list("loras")


def lora_path(name: str) -> str:
    """Full path of a LoRA file picked from the list (raises FileNotFoundError naming it)."""
    return folder_paths.get_full_path_or_raise("loras", name)


def lora_save_dir() -> str:
    """The first ``loras`` folder: where saved adapters go, so every LoRA loader lists them."""
    return folder_paths.get_folder_paths("loras")[0]


def next_free_path(directory: str, prefix: str, ext: str = ".safetensors") -> str:
    """``<directory>/<prefix>_00001_<ext>`` with the first counter not yet taken; creates folders."""
    prefix = prefix.strip().replace("\\", "/")
    if not prefix or prefix.startswith("/") or ".." in prefix.split("/"):
        raise ValueError(
            f"filename_prefix: got {prefix!r}, expected a relative name such as "
            "'personalvideo/alice' (no '..', not absolute)"
        )
    full_prefix = os.path.join(directory, prefix)
    os.makedirs(os.path.dirname(full_prefix) or directory, exist_ok=True)
    counter = 1
    while os.path.exists(f"{full_prefix}_{counter:05d}_{ext}"):
        counter += 1
    return f"{full_prefix}_{counter:05d}_{ext}"
