"""The proving-ground model in ComfyUI: make its files loadable, and the API graph that samples one clip.

Sampling always goes through ComfyUI's own nodes (UNETLoader, VAELoader, EmptyHunyuanLatentVideo, KSampler,
VAEDecode), with the dev text stand-in for the prompt: the numbers are about the model as ComfyUI runs it.
"""

from __future__ import annotations

from pathlib import Path

from dev.comfy_runtime import Graph  # noqa: F401  (build_model.py builds its sampling graph with it)
from dev.proving_ground.recipe import FULL, MODEL_FILE, VAE_FILE, Recipe
from dev.proving_ground.train import TEXT_TOKENS, TEXT_WIDTH

NEGATIVE = ""  # the model learnt the empty prompt as its unconditional branch


def register(folder: Path) -> None:
    """Let UNETLoader / VAELoader of the running ComfyUI find the files in a build folder."""
    import folder_paths

    folder_paths.add_model_folder_path("diffusion_models", str(folder))
    folder_paths.add_model_folder_path("vae", str(folder))


def text(g: Graph, prompt: str) -> list:
    return g.add("PersonalVideoDevTextEncodeStandIn", text=prompt, width=TEXT_WIDTH, pooled_width=0,
                 tokens=TEXT_TOKENS)


def loaders(g: Graph, recipe: Recipe = FULL) -> tuple[list, list]:
    """(MODEL, VAE) links of the proving-ground model; the model with the flow shift it was trained for, set as
    users set it (ModelSamplingSD3; the file alone would get Wan's default shift of 8)."""
    model = g.add("UNETLoader", unet_name=MODEL_FILE, weight_dtype="default")
    model = g.add("ModelSamplingSD3", model=model, shift=recipe.shift)
    return model, g.add("VAELoader", vae_name=VAE_FILE)


def sample(g: Graph, model, vae, recipe: Recipe, prompt: str, seed: int, steps: int | None = None,
           cfg: float | None = None, frames: int | None = None, size: tuple[int, int] | None = None) -> list:
    """Link to the decoded IMAGE frames [F, H, W, 3] of one clip (``frames`` and ``size``, (width, height): the
    recipe's unless given)."""
    width, height = size or (recipe.res, recipe.res)
    latent = g.add("EmptyHunyuanLatentVideo", width=width, height=height, length=frames or recipe.frames,
                   batch_size=1)
    samples = g.add("KSampler", model=model, positive=text(g, prompt), negative=text(g, NEGATIVE),
                    latent_image=latent, seed=seed, steps=steps or recipe.eval_steps, cfg=cfg or recipe.eval_cfg,
                    sampler_name="euler", scheduler="simple", denoise=1.0)
    return g.add("VAEDecode", samples=samples, vae=vae)


def capture(g: Graph, link, key: str) -> None:
    g.add("PersonalVideoDevCapture", value=link, key=key)
