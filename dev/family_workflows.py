"""Train-and-generate example graphs for Wan 2.2 TI2V-5B, HunyuanVideo 1.5, LTX-Video and CogVideoX, each built like
ComfyUI's own template for that model (package comfyui-workflow-templates-json, read 0.1.50 / templates 0.11.44):

- ``video_wan2_2_5B_ti2v.json``: UNETLoader wan2.2_ti2v_5B_fp16, CLIPLoader umt5_xxl_fp8_e4m3fn_scaled (wan),
  VAELoader wan2.2_vae, ModelSamplingSD3 shift 8, Wan22ImageToVideoLatent 1280x704, 121 frames (its start image
  bypassed: text to video), KSampler uni_pc / simple, 20 steps, cfg 5, 24 fps.
- ``video_hunyuan_video_1.5_720p_t2v.json``: UNETLoader hunyuanvideo1.5_720p_t2v_fp16, DualCLIPLoader
  qwen_2.5_vl_7b_fp8_scaled + byt5_small_glyphxl_fp16 (hunyuan_video_15), VAELoader hunyuanvideo15_vae_fp16,
  ModelSamplingSD3 shift 7 (the guider's model; BasicScheduler takes the loader's, whose default shift is 7 too),
  EmptyHunyuanVideo15Latent 1280x720, 121 frames, RandomNoise + KSamplerSelect euler + BasicScheduler simple 20 +
  CFGGuider 6 + SamplerCustomAdvanced, 24 fps (its super-resolution pass and EasyCache are bypassed there: left out).
- ``ltxv_text_to_video.json``: CheckpointLoaderSimple ltx-video-2b-v0.9 (model and VAE), CLIPLoader t5xxl_fp16
  (ltxv), EmptyLTXVLatentVideo 768x512, 97 frames, LTXVConditioning frame rate 25, KSamplerSelect euler,
  LTXVScheduler (30 steps, max_shift 2.05, base_shift 0.95, stretch to terminal 0.1, from the latent),
  SamplerCustom cfg 3, 24 fps.
- CogVideoX has no text-to-video template; ComfyUI's CogVideoX-based one (``utility_void_video_inpainting.json``)
  gives the loaders (CLIPLoader t5xxl_fp16 type cogvideox, VAELoader cogvideox_vae, UNETLoader) and the model's own
  release its settings (CogVideoX-5B: 720x480, 49 frames, 8 fps, 50 steps, guidance 6, a DPM-Solver++ scheduler:
  here dpmpp_2m / simple).

Where the graph deviates from its template, and why: the video is saved with SaveAnimatedWEBP (core SaveVideo's
inputs differ between ComfyUI 0.3.75 and newer, so one file cannot serve both); the trainer samples with KSampler's
schedules, so for LTX-Video it trains with euler / simple on the checkpoint's own shift (the same shift
LTXVScheduler computes for 768x512x97, without its stretch to 0.1) while the graph generates with LTXVScheduler.
"""

from __future__ import annotations

TEMPLATES = {
    "wan22_5b": dict(
        name="Wan 2.2 TI2V-5B (text to video)", template="video_wan2_2_5B_ti2v.json",
        loader=("UNETLoader", dict(unet_name="wan2.2_ti2v_5B_fp16.safetensors", weight_dtype="default")),
        vae="wan2.2_vae.safetensors",
        clip=("CLIPLoader", dict(clip_name="umt5_xxl_fp8_e4m3fn_scaled.safetensors", type="wan", device="default")),
        shift=8.0, sampler="uni_pc", scheduler="simple", steps=20, cfg=5.0, fps=24.0,
        latent=("Wan22ImageToVideoLatent", dict(width=1280, height=704, length=121, batch_size=1)),
        train_size=(640, 352, 33)),
    "hunyuan_video_15": dict(
        name="HunyuanVideo 1.5 720p T2V", template="video_hunyuan_video_1.5_720p_t2v.json",
        loader=("UNETLoader", dict(unet_name="hunyuanvideo1.5_720p_t2v_fp16.safetensors", weight_dtype="default")),
        vae="hunyuanvideo15_vae_fp16.safetensors",
        clip=("DualCLIPLoader", dict(clip_name1="qwen_2.5_vl_7b_fp8_scaled.safetensors",
                                     clip_name2="byt5_small_glyphxl_fp16.safetensors", type="hunyuan_video_15",
                                     device="default")),
        shift=7.0, sampler="euler", scheduler="simple", steps=20, cfg=6.0, fps=24.0,
        latent=("EmptyHunyuanVideo15Latent", dict(width=1280, height=720, length=121, batch_size=1)),
        train_size=(640, 368, 33)),
    "ltxv": dict(
        name="LTX-Video 2B 0.9", template="ltxv_text_to_video.json",
        loader=("CheckpointLoaderSimple", dict(ckpt_name="ltx-video-2b-v0.9.safetensors")), vae=None,
        clip=("CLIPLoader", dict(clip_name="t5xxl_fp16.safetensors", type="ltxv", device="default")),
        shift=None, sampler="euler", scheduler="simple", steps=30, cfg=3.0, fps=24.0,
        latent=("EmptyLTXVLatentVideo", dict(width=768, height=512, length=97, batch_size=1)),
        train_size=(512, 352, 33)),
    "cogvideox": dict(
        name="CogVideoX-5B T2V", template=None,
        loader=("UNETLoader", dict(unet_name="cogvideox_5b_t2v_bf16.safetensors", weight_dtype="default")),
        vae="cogvideox_vae.safetensors",
        clip=("CLIPLoader", dict(clip_name="t5xxl_fp16.safetensors", type="cogvideox", device="default")),
        shift=None, sampler="dpmpp_2m", scheduler="simple", steps=50, cfg=6.0, fps=8.0,
        latent=("EmptyHunyuanLatentVideo", dict(width=720, height=480, length=49, batch_size=1)),
        train_size=(720, 480, 25)),
}

NOTE = """PersonalVideo: train an identity adapter on {name} and generate with it, in one graph.

Built like {built} (its loaders and model files, sampler, scheduler, shift, size and CFG). The trainer is set as the graph samples ({sampler} / {scheduler}, {steps} steps, CFG {cfg:g}), at a smaller size ({tw}x{th}, {tf} frames; lower it if memory is short), and trains on the MODEL the sampler gets (after ModelSamplingSD3 where the template has one). The adapter is applied with the gate (last quarter of the steps) before the sampler.
Face models, HPS model file and prompts: see the notes of the Wan 2.1 training workflow.{extra}"""

EXTRA = {
    "ltxv": "\nLTX-Video: the graph samples with LTXVScheduler as the template does; the trainer offers KSampler's schedules only, so it trains with euler / simple on the checkpoint's own shift (the one LTXVScheduler computes for 768x512x97), without LTXVScheduler's stretch to 0.1. Long descriptive prompts work best with this model.",
    "cogvideox": "\nCogVideoX needs ComfyUI 0.33 or newer. ComfyUI has no text-to-video template or repackaged file for it: the text encoder and VAE are those of ComfyUI's CogVideoX-based VOID template (t5xxl_fp16.safetensors in models/text_encoders, cogvideox_vae.safetensors in models/vae); put a CogVideoX-5B T2V transformer in ComfyUI's key layout (blocks.N...) in models/diffusion_models under this name (ours). Settings are the model's own release defaults (720x480, 49 frames, 50 steps, guidance 6).",
    "hunyuan_video_15": "\nThe template's optional 1080p super-resolution pass is left out; add it after the sampler as in the template if you want it.",
}


def family_nodes(family: str, training_nodes, positive: str, negative: str) -> dict:
    """The family's train-and-generate graph (API format, node ids are names). ``training_nodes`` gives the pack's
    training part (dev/make_workflows.py), set here from the template's sampling."""
    t = TEMPLATES[family]
    loader, inputs = t["loader"]
    clip_type, clip_inputs = t["clip"]
    graph = {"model": {"class_type": loader, "inputs": inputs},
             "clip": {"class_type": clip_type, "inputs": clip_inputs}}
    vae = ["model", 2] if loader == "CheckpointLoaderSimple" else ["vae", 0]
    if t["vae"]:
        graph["vae"] = {"class_type": "VAELoader", "inputs": {"vae_name": t["vae"]}}
    model = ["model", 0]
    if t["shift"] is not None:
        graph["model_shift"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": model, "shift": t["shift"]}}
        model = ["model_shift", 0]
    graph |= training_nodes("wan21")  # then set from this family's template
    width, height, frames = t["train_size"]
    graph["train"]["inputs"] |= {"run_name": f"identity_{family}", "model": model, "vae": vae,
                                 "sampler_name": t["sampler"], "scheduler": t["scheduler"],
                                 "sampling_steps": t["steps"], "cfg": t["cfg"], "width": width, "height": height,
                                 "frames": frames}
    graph["save"] = {"class_type": "PersonalVideoSaveIdentityAdapter", "inputs": {
        "adapter": ["train", 0], "filename_prefix": f"personalvideo/identity_{family}", "gate_start": 0.75,
        "model": model, "override_gate_start": False, "expert": "from adapter"}}
    graph["gated"] = {"class_type": "PersonalVideoApplyIdentityAdapter", "inputs": {
        "model": model, "adapter": ["train", 0], "strength": 1.0, "gate_start": 0.75, "gate_mode": "steps",
        "override_gate_start": False, "expert": "from adapter"}}
    graph["positive"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": positive}}
    graph["negative"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": negative}}
    latent_type, latent_inputs = t["latent"]
    graph["latent"] = {"class_type": latent_type,
                       "inputs": latent_inputs | ({"vae": vae} if latent_type == "Wan22ImageToVideoLatent" else {})}
    graph |= _sampling(family, t)
    graph["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": vae}}
    graph["video"] = {"class_type": "SaveAnimatedWEBP", "inputs": {
        "images": ["decode", 0], "filename_prefix": f"personalvideo/{family}", "fps": t["fps"], "lossless": False,
        "quality": 90, "method": "default"}}
    return graph


def _sampling(family: str, t: dict) -> dict:
    """The template's sampler nodes, on the gated model; the last one is "sampler"."""
    common = {"positive": ["positive", 0], "negative": ["negative", 0]}
    if family == "hunyuan_video_15":  # the sampler's parts as separate nodes, as in the template
        return {
            "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": 42}},
            "sampler_select": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": t["sampler"]}},
            "sigmas": {"class_type": "BasicScheduler", "inputs": {"model": ["model", 0], "scheduler": t["scheduler"],
                                                                  "steps": t["steps"], "denoise": 1.0}},
            "guider": {"class_type": "CFGGuider", "inputs": {"model": ["gated", 0], "cfg": t["cfg"]} | common},
            "sampler": {"class_type": "SamplerCustomAdvanced", "inputs": {
                "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["sampler_select", 0],
                "sigmas": ["sigmas", 0], "latent_image": ["latent", 0]}},
        }
    if family == "ltxv":
        return {
            "conditioning": {"class_type": "LTXVConditioning", "inputs": {"frame_rate": 25.0} | common},
            "sampler_select": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": t["sampler"]}},
            "sigmas": {"class_type": "LTXVScheduler", "inputs": {
                "steps": t["steps"], "max_shift": 2.05, "base_shift": 0.95, "stretch": True, "terminal": 0.1,
                "latent": ["latent", 0]}},
            "sampler": {"class_type": "SamplerCustom", "inputs": {
                "model": ["gated", 0], "add_noise": True, "noise_seed": 42, "cfg": t["cfg"],
                "positive": ["conditioning", 0], "negative": ["conditioning", 1], "sampler": ["sampler_select", 0],
                "sigmas": ["sigmas", 0], "latent_image": ["latent", 0]}},
        }
    return {"sampler": {"class_type": "KSampler", "inputs": {
        "model": ["gated", 0], "latent_image": ["latent", 0], "seed": 42, "steps": t["steps"], "cfg": t["cfg"],
        "sampler_name": t["sampler"], "scheduler": t["scheduler"], "denoise": 1.0} | common}}


def family_workflows(training_nodes, positive: str, negative: str) -> dict[str, tuple[dict, str]]:
    out = {}
    for family, t in TEMPLATES.items():
        width, height, frames = t["train_size"]
        built = (f"ComfyUI's own template {t['template']}" if t["template"] else
                 "ComfyUI's CogVideoX-based VOID template (loaders) and CogVideoX-5B's release (settings)")
        note = NOTE.format(name=t["name"], built=built, sampler=t["sampler"], scheduler=t["scheduler"],
                           steps=t["steps"], cfg=t["cfg"], tw=width, th=height, tf=frames, extra=EXTRA.get(family, ""))
        out[f"train_and_generate_{family}"] = (family_nodes(family, training_nodes, positive, negative), note)
    return out
