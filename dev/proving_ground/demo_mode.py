"""The main job (dev/demo.py) on the proving-ground model instead of the tiny random one, when it is built.

The example workflows name the official Wan 2.1 files; the proving-ground weights are linked under those names
in the demo's models folder, and the graphs are adapted to what the model knows: its motion prompts (through the
same text stand-in), its frame size and count, 20 sampling steps, the empty negative prompt, and a reference
photo of a person it never saw (Obama, held out of its training). The random style LoRA slot is set to
strength 0: a random LoRA only blurs a trained model's faces.
"""

from __future__ import annotations

from pathlib import Path

from dev.proving_ground.clips import MOTIONS, SUBJECT, prompt_for
from dev.proving_ground.faces import REFERENCE
from dev.proving_ground.recipe import FULL, MODEL_FILE, VAE_FILE
from dev.tiny_models import WORKFLOW_FILES

PROMPT = prompt_for("moves left")
SAMPLING_STEPS = 20


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


def adapt(prompt: dict) -> dict:
    """An API prompt of the example workflows (already shrunk by tiny_models.for_tiny_models), for this model."""
    positive = {n["inputs"]["positive"][0] for n in prompt.values() if n["class_type"] == "KSampler"}
    for node_id, node in prompt.items():
        inputs, kind = node["inputs"], node["class_type"]
        if kind == "PersonalVideoPromptBank":
            inputs.update(subject=SUBJECT, user_prompts="\n".join(prompt_for(m, "{subject}") for m in MOTIONS),
                          negative_prompt="", use_built_in=False)
        elif kind == "CLIPTextEncode":
            inputs["text"] = PROMPT if node_id in positive else ""
        elif kind == "KSampler":
            inputs["steps"] = SAMPLING_STEPS
        elif kind == "EmptyHunyuanLatentVideo":
            inputs.update(width=FULL.res, height=FULL.res, length=FULL.frames)
        elif kind == "PersonalVideoTrainIdentityAdapter":
            inputs.update(sampling_steps=SAMPLING_STEPS, width=FULL.res, height=FULL.res, frames=FULL.frames)
        elif kind == "LoraLoaderModelOnly":
            inputs["strength_model"] = 0.0
    return prompt


REFERENCE_PHOTO = REFERENCE
