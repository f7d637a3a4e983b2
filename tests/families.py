"""Graph pieces for the tiny HunyuanVideo 1.5, LTX-Video and CogVideoX models (dev/tiny_families.py).

Each family is loaded as its users load it: HunyuanVideo 1.5 and CogVideoX through UNETLoader + VAELoader,
LTX-Video from its one-file checkpoint through CheckpointLoaderSimple. Graphs whose VAELoader builds a VAE of
fixed full size run inside ``tiny_families.tiny_vae_sizes`` (``run``). CogVideoX is in ComfyUI 0.33, not in
0.3.75: ``AVAILABLE`` lists the families this ComfyUI has, read from its source tree (no import before boot), and
``CASES`` parametrizes tests over every family, those this ComfyUI lacks as skips that say so in the run's report.
"""

from __future__ import annotations

import pytest

from dev import tiny_families, tiny_models
from dev.comfy_runtime import comfyui_path
from graphs import Graph, install_models

MODULE_FILE = {"hunyuan_video_15": "hunyuan_video/model.py", "ltxv": "lightricks/model.py",
               "cogvideox": "cogvideo/model.py"}
AVAILABLE = [f for f in tiny_models.MORE_FAMILIES if (comfyui_path() / "comfy" / "ldm" / MODULE_FILE[f]).is_file()
             and (f != "hunyuan_video_15" or "HunyuanVideo15" in
                  (comfyui_path() / "comfy" / "supported_models.py").read_text())]
MODEL_TYPE = {"hunyuan_video_15": "HunyuanVideo15", "ltxv": "LTXV", "cogvideox": "CogVideoX_T2V"}
COMFYUI_VERSION = (comfyui_path() / "comfyui_version.py").read_text().split("__version__ = ")[-1].strip().strip("\"'")
CASES = [family if family in AVAILABLE else pytest.param(family, marks=pytest.mark.skip(
    reason=f"ComfyUI {COMFYUI_VERSION} has no {MODEL_TYPE[family]} model (comfy/ldm/{MODULE_FILE[family]}); this "
           "family is tested on the versions that have it")) for family in tiny_models.MORE_FAMILIES]
# (latent channels, spatial, temporal) of each family's VAE, and a video size that fits it
GEOMETRY = {"hunyuan_video_15": (32, 16, 4), "ltxv": (128, 32, 8), "cogvideox": (16, 8, 4)}
FRAMES = {"hunyuan_video_15": 5, "ltxv": 9, "cogvideox": 5}  # two latent frames each
EMPTY_LATENT = {"hunyuan_video_15": "EmptyHunyuanVideo15Latent", "ltxv": "EmptyLTXVLatentVideo",
                "cogvideox": "EmptyHunyuanLatentVideo"}  # CogVideoX: 16 channels, 8x, 4x (no node of its own)
SIZE = 64
# The sampling the tests compare: KSampler(Advanced) euler / simple, 8 steps, gate at step 6.
STEPS, GATE, CFG, SEED, PROMPT, NEGATIVE = 8, 6, 3.0, 7, "a man dancing in the rain", "blurry"


def model_file(family: str) -> str:
    return f"tiny_{family}.safetensors"


def vae_file(family: str) -> str:
    return f"tiny_{family}_vae.safetensors"


def install(comfy, family: str) -> None:
    """The family's tiny model (and VAE) and two random LoRAs for it (once per session)."""
    if family == "ltxv":
        path = comfy.model_dir("checkpoints") / model_file(family)
        if not path.exists():
            tiny_families.write_ltxv_checkpoint(path)
    else:
        path = comfy.model_dir("diffusion_models") / model_file(family)
        if not path.exists():
            tiny_models.write_diffusion_model(family, path)
            tiny_families.write_family_vae(family, comfy.model_dir("vae") / vae_file(family))
    lora = comfy.model_dir("loras") / f"identity_{family}.safetensors"
    if not lora.exists():
        # CogVideoX (v-prediction DDPM) moves little in its last quarter: a stronger LoRA makes the change clear
        tiny_models.write_random_lora(family, lora, seed=1, std=0.5 if family == "cogvideox" else 0.15)


def loaders(g: Graph, family: str):
    """(model, vae) links, loaded as users do."""
    if family == "ltxv":
        ckpt = g.add("CheckpointLoaderSimple", ckpt_name=model_file(family))
        return ckpt, [ckpt[0], 2]
    return (g.add("UNETLoader", unet_name=model_file(family), weight_dtype="default"),
            g.add("VAELoader", vae_name=vae_file(family)))


def clip_standin(g: Graph, family: str):
    """The text encoder stand-in at the family's width (LTX-Video also needs T5's attention mask)."""
    return g.add("PersonalVideoDevCLIPStandIn", width=tiny_models.CONTEXT_WIDTH[family],
                 pooled_width=tiny_models.POOLED_WIDTH[family], tokens=16, attention_mask=family == "ltxv")


def conditioning(g: Graph, family: str, prompt: str, negative: str):
    clip = clip_standin(g, family)
    return g.add("CLIPTextEncode", clip=clip, text=prompt), g.add("CLIPTextEncode", clip=clip, text=negative)


def empty_latent(g: Graph, family: str):
    return g.add(EMPTY_LATENT[family], width=SIZE, height=SIZE, length=FRAMES[family], batch_size=1)


def run(comfy, family: str, g: Graph) -> dict:
    """Execute ``g`` with the family's tiny VAE sizes in force; returns what the capture nodes kept."""
    with tiny_families.tiny_vae_sizes(family):
        comfy.run(g.nodes)
    return dict(comfy.captured())


def sample(family, adapter=None, start=0, end=10000, add_noise="enable", start_latent=None, lora=None, g=None):
    """(graph, KSamplerAdvanced link) over the family's model: with ``adapter`` through Load + Apply Identity
    Adapter (its recorded gate start), with ``lora`` through core LoraLoaderModelOnly; steps ``start``..``end``."""
    g = g or Graph()
    model, _ = loaders(g, family)
    if adapter:
        load = g.add("PersonalVideoLoadIdentityAdapter", lora_name=adapter)
        model = g.add("PersonalVideoApplyIdentityAdapter", model=model, adapter=load, strength=1.0, gate_start=0.75,
                      gate_mode="steps", override_gate_start=False)
    if lora:
        model = g.add("LoraLoaderModelOnly", model=model, lora_name=lora, strength_model=1.0)
    pos, neg = conditioning(g, family, PROMPT, NEGATIVE)
    return g, g.add("KSamplerAdvanced", model=model, positive=pos, negative=neg,
                    latent_image=start_latent or empty_latent(g, family), noise_seed=SEED, steps=STEPS, cfg=CFG,
                    sampler_name="euler", scheduler="simple", add_noise=add_noise, start_at_step=start,
                    end_at_step=end, return_with_leftover_noise="enable" if end < STEPS else "disable")


def latent(rt, family, g, link):
    """Run ``g`` and return the latent at ``link``."""
    g.capture(link, "out")
    return run(rt, family, g)["out"]["samples"].clone()


def two_sampler_reference(rt, family, lora):
    """The native way: KSamplerAdvanced steps 0..GATE on the base model, GATE..end with core LoraLoader."""
    g, first = sample(family, end=GATE)
    g, second = sample(family, start=GATE, add_noise="disable", start_latent=first, lora=lora, g=g)
    return latent(rt, family, g, second)


def install_all(comfy):
    """The pack's usual tiny models plus every family this ComfyUI has, in its models folders."""
    install_models(comfy)
    for family in AVAILABLE:
        install(comfy, family)
    return comfy


def load_all(comfy) -> dict:
    """{family: (MODEL, VAE, CLIP stand-in)} as the loader nodes return them, for every family this ComfyUI has."""
    out = {}
    for family in AVAILABLE:
        g = Graph()
        model, vae = loaders(g, family)
        g.capture(model, "model")
        g.capture(vae, "vae")
        g.capture(clip_standin(g, family), "clip")
        c = run(comfy, family, g)
        out[family] = (c["model"], c["vae"], c["clip"])
    return out
