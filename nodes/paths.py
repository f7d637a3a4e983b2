"""The one module that knows ComfyUI's model folders (the only user of folder_paths)."""

from __future__ import annotations

import os

import folder_paths


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


# --- reward models ------------------------------------------------------------------------------
# insightface packs live in models/insightface/models/<pack>/ (the layout insightface's FaceAnalysis and the
# PuLID / InstantID packs use); HPSv2 model files in models/hpsv2/.
HPS_EXTENSIONS = {".pt", ".pth", ".safetensors"}


def register_reward_folders() -> None:
    """Register the ``insightface`` and ``hpsv2`` model folders (idempotent; keeps folders other packs added)."""
    folder_paths.add_model_folder_path("insightface", os.path.join(folder_paths.models_dir, "insightface"))
    folder_paths.add_model_folder_path("hpsv2", os.path.join(folder_paths.models_dir, "hpsv2"))
    paths, exts = folder_paths.folder_names_and_paths["hpsv2"]
    folder_paths.folder_names_and_paths["hpsv2"] = (paths, set(exts) | HPS_EXTENSIONS)


def insightface_pack_roots() -> list[str]:
    """Every ``<insightface folder>/models`` directory, where packs are subfolders."""
    register_reward_folders()
    return [os.path.join(p, "models") for p in folder_paths.get_folder_paths("insightface")]


def insightface_packs() -> list[str]:
    """Names of the pack folders (with at least one .onnx file) under every insightface folder."""
    names = set()
    for root in insightface_pack_roots():
        if os.path.isdir(root):
            for name in os.listdir(root):
                sub = os.path.join(root, name)
                if os.path.isdir(sub) and any(f.endswith(".onnx") for f in os.listdir(sub)):
                    names.add(name)
    return sorted(names)


def insightface_pack_path(name: str) -> str:
    """Folder of the pack ``name``; FileNotFoundError naming the folders searched when it is absent."""
    roots = insightface_pack_roots()
    for root in roots:
        path = os.path.join(root, name)
        if os.path.isdir(path):
            return path
    raise FileNotFoundError(
        f"pack: insightface pack {name!r} not found in {roots}; put the pack's folder (e.g. antelopev2 or "
        "buffalo_l with its .onnx files) into models/insightface/models/"
    )


def hpsv2_files() -> list[str]:
    """HPSv2 model files under every registered ``hpsv2`` folder."""
    register_reward_folders()
    return folder_paths.get_filename_list("hpsv2")


def hpsv2_path(name: str) -> str:
    """Full path of an HPSv2 model file picked from the list (raises FileNotFoundError naming it)."""
    register_reward_folders()
    return folder_paths.get_full_path_or_raise("hpsv2", name)


# --- evaluators -------------------------------------------------------------------------------------
# dlib's model files (.dat) go directly into models/dlib/ (where other face packs keep them too), or into a
# subfolder of it. Choices name folders as "models/dlib" and "models/dlib/<subfolder>" across every
# registered dlib folder (extra_model_paths.yaml included).
DLIB_ROOT_CHOICE = "models/dlib"


def register_dlib_folder() -> None:
    """Register the ``dlib`` model folder for .dat files (idempotent; keeps folders other packs added)."""
    folder_paths.add_model_folder_path("dlib", os.path.join(folder_paths.models_dir, "dlib"))
    paths, exts = folder_paths.folder_names_and_paths["dlib"]
    folder_paths.folder_names_and_paths["dlib"] = (paths, set(exts) | {".dat"})


def dlib_folders() -> list[str]:
    """The folder choices: ``models/dlib`` and each subfolder of a dlib folder that holds .dat files."""
    register_dlib_folder()
    subs = {os.path.dirname(f).replace("\\", "/") for f in folder_paths.get_filename_list("dlib")}
    return [DLIB_ROOT_CHOICE] + sorted(f"{DLIB_ROOT_CHOICE}/{s}" for s in subs if s)


def dlib_folder_path(choice: str) -> str:
    """The folder a choice names: the first registered dlib folder where it exists (else the first's path,
    so that the loader's error says where the files were expected)."""
    register_dlib_folder()
    inside = choice == DLIB_ROOT_CHOICE or choice.startswith(DLIB_ROOT_CHOICE + "/")
    sub = choice[len(DLIB_ROOT_CHOICE) + 1:] if inside else ""
    if not inside or ".." in sub.split("/") or sub.startswith("/"):
        raise ValueError(f"folder: got {choice!r}, expected {DLIB_ROOT_CHOICE!r} or a subfolder of it")
    candidates = [os.path.join(root, sub) if sub else root for root in folder_paths.get_folder_paths("dlib")]
    return next((c for c in candidates if os.path.isdir(c)), candidates[0])


# --- training ---------------------------------------------------------------------------------------
def resume_file_path(run_name: str) -> str:
    """``<output>/personalvideo_training/<run_name>.safetensors``: where a training run's resume file lives."""
    name = run_name.strip()
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"run_name: got {run_name!r}, expected a plain name such as 'alice' (no folders); "
                         "it names the run's resume file so that resume finds it")
    folder = os.path.join(folder_paths.get_output_directory(), "personalvideo_training")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, name + ".safetensors")
