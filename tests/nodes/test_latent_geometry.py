"""The trainer's latent geometry comes from the model and the VAE (nodes/runtime/latent_geometry.py), in real ComfyUI.

Wan 2.1 / Wan 2.2 A14B: the tiny Wan 2.1 VAE through core VAELoader (16 channels, 8x, 4x). Wan 2.2 5B: a tiny
WanModel with model_type t2v and in_dim/out_dim 48, which core UNETLoader loads as WAN22_T2V, and a tiny Wan 2.2
VAE (the real ``comfy.ldm.wan.vae2_2.WanVAE`` class, dim 8). Substituted, and said here: ComfyUI's loader builds
every Wan 2.2 VAE at the full size (dim 160, dec_dim 256: 705 M parameters, 2.8 GB in float32) whatever the file
holds, so during the 5B training test the loader is made to build it at the file's tiny sizes
(``dev.tiny_models.tiny_wan22_vae_sizes``); its detection, geometry, dtype and patcher run as they are. The
face models are the small real w600k_mbf / SCRFD pack with detection threshold 0.05, as in test_trainer_comfy.py.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from dev import tiny_models
from dev.face_assets import make_pack, photo_path
from graphs import Graph, install_models, pack_module

WAN22_5B = "tiny_wan22_5b.safetensors"


@pytest.fixture(scope="module")
def loaded(comfy):
    install_models(comfy)
    if not (comfy.model_dir("diffusion_models") / WAN22_5B).exists():
        tiny_models.write_diffusion_model("wan21", comfy.model_dir("diffusion_models") / WAN22_5B, in_dim=48,
                                          out_dim=48)
    g = Graph()
    g.capture(g.add("UNETLoader", unet_name="tiny_wan21.safetensors", weight_dtype="default"), "wan21")
    g.capture(g.add("UNETLoader", unet_name=WAN22_5B, weight_dtype="default"), "wan22_5b")
    g.capture(g.add("VAELoader", vae_name="tiny_wan_vae.safetensors"), "vae")
    comfy.run(g.nodes)
    return dict(comfy.captured())


def test_wan21_geometry_from_the_loaded_vae(loaded):
    geometry = pack_module("nodes.runtime.latent_geometry")
    g = geometry.latent_geometry(loaded["wan21"], loaded["vae"])
    assert (g.channels, g.spatial, g.temporal) == (16, 8, 4)
    assert g.latent_shape(64, 48, 10) == (1, 16, 3, 6, 8)
    assert g.pixel_frames(10) == 9


def test_trainer_backend_takes_its_latent_from_the_geometry(loaded):
    runtime_model, backend_mod = pack_module("nodes.runtime.model"), pack_module("nodes.runtime.backend")
    autograd = pack_module("nodes.runtime.autograd")
    model = loaded["wan21"]
    with autograd.training_mode():
        _, gate, patched = runtime_model.attach_trainable_adapter(
            model, runtime_model.adapter_targets(model, "attention").shapes, 4, 4.0, 0, 0.75, "cpu")
        clip = object()  # not used before a prompt is encoded
        backend = backend_mod.ComfyBackend(patched, gate, clip, loaded["vae"],
                                           backend_mod.ComfyBackendSettings("", 96, 64, 13, 8, 3.0))
    assert backend.latent_shape == (1, 16, 4, 8, 12) and backend.num_frames == 13


def test_wan22_5b_loads_as_wan22_and_is_refused_with_the_wan21_vae(loaded):
    geometry = pack_module("nodes.runtime.latent_geometry")
    model = loaded["wan22_5b"]
    assert type(model.model.model_config).__name__ == "WAN22_T2V"
    assert model.model.latent_format.latent_channels == 48
    with pytest.raises(ValueError, match=r"vae: got a VAE with 16-channel latents, expected one for the "
                                         r"model's 48-channel latents .* connect the model's own VAE"):
        geometry.latent_geometry(model, loaded["vae"])


def test_wan22_5b_geometry_matches_comfyuis_wan22_latent_node(comfy):
    """48 channels, 16x spatial, 4x temporal (what ComfyUI's Wan 2.2 VAE reports) gives the latent ComfyUI's
    own Wan22ImageToVideoLatent node makes for the 5B model."""
    import nodes

    geometry = pack_module("nodes.runtime.latent_geometry")
    g = geometry.LatentGeometry(48, 16, 4)
    node = nodes.NODE_CLASS_MAPPINGS["Wan22ImageToVideoLatent"]
    for width, height, length in ((1280, 704, 121), (640, 352, 33), (96, 64, 9)):
        latent = node.execute(None, width, height, length, 1)[0]["samples"]
        assert g.latent_shape(width, height, length) == tuple(latent.shape)
        assert torch.count_nonzero(latent) == 0


def test_wan22_5b_trains_a_step_with_its_48_channel_16x_latent(comfy, loaded, monkeypatch):
    tiny_models.tiny_wan22_vae_sizes(monkeypatch)
    vae_file = comfy.model_dir("vae") / "tiny_wan22_vae.safetensors"
    if not vae_file.exists():
        tiny_models.write_wan22_vae(vae_file)
    make_pack(comfy.model_dir("insightface") / "models", "vectron_s")
    shutil.copy(photo_path("obama.jpg"), comfy.base_dir / "input" / "obama.jpg")
    g = Graph()
    model = g.add("UNETLoader", unet_name=WAN22_5B, weight_dtype="default")
    clip = g.add("PersonalVideoDevCLIPStandIn", width=tiny_models.CONTEXT_WIDTH["wan21"], pooled_width=0, tokens=16)
    vae = g.add("VAELoader", vae_name="tiny_wan22_vae.safetensors")
    idm = g.add("PersonalVideoLoadIdentityRewardModel", pack="vectron_s", det_size=640, det_threshold=0.05)
    ref = g.add("PersonalVideoLoadReferenceFaces", identity_reward=idm, images=g.add("LoadImage", image="obama.jpg"),
                augmentations=2, crop_jitter=0.05, colour_jitter=0.1, seed=0)
    bank = g.add("PersonalVideoPromptBank", subject="a man", user_prompts="", negative_prompt="blurry",
                 use_built_in=True)
    tr = g.add("PersonalVideoTrainIdentityAdapter", model=model, clip=clip, vae=vae, reference=ref,
               identity_reward=idm, prompt_bank=bank, steps=1, learning_rate=1e-2, rank=4, alpha=4.0,
               layers="attention", gate_start=0.75, sampling_steps=4, sampler_name="euler", scheduler="simple",
               cfg=3.0, width=64, height=64, frames=5, frames_per_reward=2, icr_weight=1.0, scr_weight=1.0,
               scr_temperature=100.0, backprop_last_k=0, checkpoint_blocks=True, max_grad_norm=1.0, seed=0,
               save_every=0, run_name="wan22_5b", resume=False)
    g.capture(vae, "vae")
    g.capture(tr, "adapter")
    g.capture([tr[0], 2], "summary")
    comfy.run(g.nodes)
    c = comfy.captured()
    geometry = pack_module("nodes.runtime.latent_geometry").latent_geometry(loaded["wan22_5b"], c["vae"])
    assert (geometry.channels, geometry.spatial, geometry.temporal) == (48, 16, 4)
    assert c["adapter"].metadata["personalvideo.base_model"] == "WAN22_T2V"
    assert "1 steps (1 updated the adapter" in c["summary"], c["summary"]
    ups = [v for k, v in c["adapter"].items() if k.endswith("lora_up.weight")]
    assert ups and any(float(v.abs().sum()) > 0 for v in ups), "the step must move the adapter"
