"""Write the example workflows in workflows/ (ComfyUI UI format) from readable API-format graphs.

    .venv/bin/python -m dev.make_workflows

Model file names are the ones the official ComfyUI model downloads use, so a user who has them runs the
graphs as they are. The tests execute every file (tests/workflows/test_workflows.py).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from dev.family_workflows import family_workflows

REPO = Path(__file__).resolve().parent.parent

FAMILIES = {
    "wan21": dict(
        unet="wan2.1_t2v_1.3B_fp16.safetensors", vae="wan_2.1_vae.safetensors",
        clip=("CLIPLoader", dict(clip_name="umt5_xxl_fp8_e4m3fn_scaled.safetensors", type="wan", device="default")),
        width=832, height=480, sampler="uni_pc", cfg=6.0, train_cfg=5.0, name="Wan 2.1 T2V 1.3B"),
    "hunyuan_video": dict(
        unet="hunyuan_video_t2v_720p_bf16.safetensors", vae="hunyuan_video_vae_bf16.safetensors",
        clip=("DualCLIPLoader", dict(clip_name1="clip_l.safetensors", clip_name2="llava_llama3_fp8_scaled.safetensors",
                                     type="hunyuan_video", device="default")),
        # guidance-distilled: real CFG off (1.0); the embedded guidance is the model's default 6.0, as
        # ComfyUI's HunyuanVideo example sets it with FluxGuidance
        width=848, height=480, sampler="euler", cfg=1.0, train_cfg=1.0, name="HunyuanVideo T2V 720p"),
}

NOTE_TRAIN = """PersonalVideo: train an identity adapter from one photo ({name}).

1. Put a photo of the person in ComfyUI/input and pick it in Load Image (one clear face; more photos: Load Reference Faces has more image inputs).
2. Face models: an insightface pack folder in ComfyUI/models/insightface/models/ (antelopev2 as PuLID / InstantID users have, or buffalo_l).
3. Semantic reward (optional, recommended): HPS_v2.1_compressed.pt in ComfyUI/models/hpsv2/. Without it, disconnect it: SCR is then off.
4. Prompt Bank: set 'subject' (a woman, a man, ...). The trainer generates videos for these prompts and learns the face from the rewards.
5. Train: 200+ steps for a real adapter. Lower width/height/frames or set backprop_last_k to 1-2 if memory is short. Cancel keeps the run's resume file; run again with resume on to continue.
6. The adapter is saved to models/loras/personalvideo/. Use it with the 'generate' workflow.
The training curve shows the loss, face similarity (adapter vs base model) and the no-face rate."""

NOTE_GENERATE = """PersonalVideo: generate with a saved identity adapter ({name}).

- Load Identity Adapter: pick the file the training workflow saved (models/loras/personalvideo/...).
- Apply Identity Adapter (Gated): the adapter acts only from step ceil(gate_start x steps) on (the last quarter by default), so motion comes from the base model and the face from the adapter. It uses the gate start the adapter was trained with (recorded in the file; its report output says which value it used); override_gate_start sets another.
- Style LoRA slot: any community LoRA for this model, loaded with core Load LoRA; it stays on for all steps. Set its strength to 0 to turn it off.
- Sampling split over several sampler nodes (e.g. Wan 2.2's two experts with two KSamplerAdvanced) needs no change: gate_start counts the steps of the whole sampling."""

NOTE_EVALUATE = """PersonalVideo: evaluate a generated video against the reference photo.

- Load Image: the animated WEBP to score (copy it from ComfyUI/output/personalvideo into ComfyUI/input, or upload it); it loads every frame. For an MP4, use core Load Video + Get Video Components instead.
- Face model: use a different insightface pack than the one the adapter was trained with (here buffalo_l vs antelopev2), so the face score is not the training reward grading itself.
- Evaluate Video: Face Sim (x100 over 16 uniformly spaced frames, largest face; the ConsisID convention), dynamic degree (VBench's rule with a weight-free optical flow), and CLIP-T / temporal consistency from the connected OpenCLIP model (here the HPS model file's CLIP). The table appears on the node; the JSON output has the per-frame numbers."""

NOTE_BOTH = """PersonalVideo: train an identity adapter and generate with it, in one graph ({name}).
Training runs first (see the notes of the training workflow), then the same model samples a video with the trained adapter gated to the last quarter of the steps."""


def base_nodes(f: dict) -> dict:
    clip_type, clip_inputs = f["clip"]
    return {
        "model": {"class_type": "UNETLoader", "inputs": {"unet_name": f["unet"], "weight_dtype": "default"}},
        "clip": {"class_type": clip_type, "inputs": clip_inputs},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": f["vae"]}},
    }


def training_nodes(family: str) -> dict:
    return {
        "photo": {"class_type": "LoadImage", "inputs": {"image": "reference.jpg"}},
        "face_model": {"class_type": "PersonalVideoLoadIdentityRewardModel",
                       "inputs": {"pack": "antelopev2", "det_size": 640, "det_threshold": 0.5}},
        "hps": {"class_type": "PersonalVideoLoadSemanticRewardModel",
                "inputs": {"model_file": "HPS_v2.1_compressed.pt", "architecture": "ViT-H-14"}},
        "reference": {"class_type": "PersonalVideoLoadReferenceFaces",
                      "inputs": {"identity_reward": ["face_model", 0], "images": ["photo", 0], "augmentations": 8,
                                 "crop_jitter": 0.05, "colour_jitter": 0.1, "seed": 0}},
        "prompts": {"class_type": "PersonalVideoPromptBank",
                    "inputs": {"subject": "a woman", "user_prompts": "",
                               "negative_prompt": "blurry, static, distorted face, low quality", "use_built_in": True}},
        "train": {"class_type": "PersonalVideoTrainIdentityAdapter", "inputs": {
            "model": ["model", 0], "clip": ["clip", 0], "vae": ["vae", 0], "reference": ["reference", 0],
            "identity_reward": ["face_model", 0], "prompt_bank": ["prompts", 0], "semantic_reward": ["hps", 0],
            "steps": 200, "learning_rate": 1e-4, "rank": 16, "alpha": 16.0, "layers": "attention",
            "gate_start": 0.75, "sampling_steps": 20, "sampler_name": FAMILIES[family]["sampler"],
            "scheduler": "simple", "cfg": FAMILIES[family]["train_cfg"], "width": 480, "height": 272, "frames": 33,
            "frames_per_reward": 4, "icr_weight": 1.0, "scr_weight": 1.0, "scr_temperature": 100.0,
            "backprop_last_k": 0, "checkpoint_blocks": True, "max_grad_norm": 1.0, "seed": 0,
            "save_every": 50, "run_name": f"identity_{family}", "resume": True, "expert_boundary": 0.875}},
        "curve": {"class_type": "PreviewImage", "inputs": {"images": ["train", 1]}},
        # the trainer's summary on the canvas: core Preview Any ("Preview as Text", 0.3.75 and newer)
        "summary": {"class_type": "PreviewAny", "inputs": {"source": ["train", 2]}},
        "faces": {"class_type": "PreviewImage", "inputs": {"images": ["reference", 1]}},
    }


def generation_nodes(f: dict, adapter_link: list, family: str) -> dict:
    return {
        "style": {"class_type": "LoraLoaderModelOnly",
                  "inputs": {"model": ["model", 0], "lora_name": "style_lora.safetensors", "strength_model": 1.0}},
        "gated": {"class_type": "PersonalVideoApplyIdentityAdapter",
                  "inputs": {"model": ["style", 0], "adapter": adapter_link, "strength": 1.0, "gate_start": 0.75,
                             "gate_mode": "steps", "override_gate_start": False, "expert": "from adapter"}},
        "positive": {"class_type": "CLIPTextEncode",
                     "inputs": {"clip": ["clip", 0], "text": "a woman dancing in the rain on a city street at night, "
                                                              "neon reflections, the camera circles around her"}},
        "negative": {"class_type": "CLIPTextEncode",
                     "inputs": {"clip": ["clip", 0], "text": "blurry, static, distorted face, low quality"}},
        "latent": {"class_type": "EmptyHunyuanLatentVideo",
                   "inputs": {"width": f["width"], "height": f["height"], "length": 33, "batch_size": 1}},
        "sampler": {"class_type": "KSampler", "inputs": {
            "model": ["gated", 0], "positive": ["positive", 0], "negative": ["negative", 0],
            "latent_image": ["latent", 0], "seed": 42, "steps": 30, "cfg": f["cfg"], "sampler_name": f["sampler"],
            "scheduler": "simple", "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["vae", 0]}},
        # Animated WEBP: SaveAnimatedWEBP and LoadImage (which reads its frames back as a batch) have the same
        # inputs on every ComfyUI from 0.3.75 on; core SaveVideo's inputs changed shape in later versions.
        "video": {"class_type": "SaveAnimatedWEBP", "inputs": {
            "images": ["decode", 0], "filename_prefix": f"personalvideo/{family}", "fps": 16.0, "lossless": False,
            "quality": 90, "method": "default"}},
    }


NOTE_A14B = """PersonalVideo: train an identity adapter on Wan 2.2 T2V A14B (two experts) and generate with it, in one graph.

Built like ComfyUI's own Wan 2.2 14B T2V template (video_wan2_2_14B_t2v.json): ModelSamplingSD3 shift 5 on both experts; the high-noise expert samples steps 0-{split} of {steps} (KSamplerAdvanced, leftover noise), the low-noise expert steps {split}-{steps}; euler / simple, CFG {cfg:g}.{lightning}
The trainer does the same: expert_switch_step = {split}, the first KSamplerAdvanced's end_at_step (change both together); high_noise_model samples those steps without the adapter; 'model', the low-noise expert, is the only one trained, saved (expert: low_noise) and gated. (expert_switch_step 0 splits at expert_boundary instead, a timestep fraction whose step depends on the shift: the summary says which steps each expert ran.)
The gate counts the steps of the whole sampling: gate_start 0.75 = {gated}, in the low-noise expert (a gate start in the high-noise steps is refused).
Face models, HPS model file and prompts: see the notes of the Wan 2.1 training workflow."""

LIGHTNING_NOTE = """
4-step speed LoRAs (the template's "Enable Lightning LoRA" switch): the lightx2v 4-step LoRA of each expert is loaded with LoraLoaderModelOnly before ModelSamplingSD3, always on, for training and generation alike: train with the speed LoRAs on, at the step count you generate with. At 4 steps the last quarter is one step (step 3, from sigma 0.625 at shift 5: the same noise level at which gate 0.75 opens at 20 steps); gate_start 0.5 gates both low-noise steps (2-3). See the README, "Speed LoRAs"."""

A14B = dict(high="wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
            low="wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors", vae="wan_2.1_vae.safetensors",
            clip=FAMILIES["wan21"]["clip"], shift=5.0, steps=20, split=10, cfg=3.5, sampler="euler",
            width=640, height=640)
# The template's Lightning switch: the lightx2v 4-step LoRAs on both experts, 4 steps split at 2, cfg 1.
A14B_LIGHTNING = A14B | dict(steps=4, split=2, cfg=1.0, loras={
    "high": "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors",
    "low": "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors"})


def wan22_a14b_nodes(f: dict = A14B, name: str = "wan22_a14b") -> dict:
    """The A14B train-and-generate graph (ComfyUI's Wan 2.2 14B T2V template + the trainer + the gate)."""
    graph = base_nodes(dict(unet=f["low"], vae=f["vae"], clip=f["clip"]))
    graph["high_model"] = {"class_type": "UNETLoader", "inputs": {"unet_name": f["high"], "weight_dtype": "default"}}
    for expert, key, source in (("high", "high_shift", "high_model"), ("low", "low_shift", "model")):
        if "loras" in f:
            graph[f"{expert}_lora"] = {"class_type": "LoraLoaderModelOnly", "inputs": {
                "model": [source, 0], "lora_name": f["loras"][expert], "strength_model": 1.0}}
            source = f"{expert}_lora"
        graph[key] = {"class_type": "ModelSamplingSD3", "inputs": {"model": [source, 0], "shift": f["shift"]}}
    graph |= training_nodes("wan21")
    graph["train"]["inputs"] |= {"model": ["low_shift", 0], "high_noise_model": ["high_shift", 0],
                                 "expert_switch_step": f["split"], "sampling_steps": f["steps"], "cfg": f["cfg"],
                                 "sampler_name": f["sampler"], "scheduler": "simple", "run_name": f"identity_{name}"}
    graph["save"] = {"class_type": "PersonalVideoSaveIdentityAdapter", "inputs": {
        "adapter": ["train", 0], "filename_prefix": f"personalvideo/identity_{name}", "gate_start": 0.75,
        "model": ["low_shift", 0], "override_gate_start": False, "expert": "from adapter"}}
    gen = generation_nodes(dict(FAMILIES["wan21"], width=f["width"], height=f["height"], cfg=f["cfg"]),
                           ["train", 0], name)
    del gen["style"], gen["sampler"]
    gen["gated"]["inputs"]["model"] = ["low_shift", 0]
    for key, model, start, end, first in (("sampler_high", "high_shift", 0, f["split"], True),
                                          ("sampler", "gated", f["split"], 10000, False)):
        gen[key] = {"class_type": "KSamplerAdvanced", "inputs": {
            "model": [model, 0], "add_noise": "enable" if first else "disable", "noise_seed": 42,
            "steps": f["steps"], "cfg": f["cfg"], "sampler_name": f["sampler"], "scheduler": "simple",
            "positive": ["positive", 0], "negative": ["negative", 0],
            "latent_image": ["latent", 0] if first else ["sampler_high", 0], "start_at_step": start,
            "end_at_step": end, "return_with_leftover_noise": "enable" if first else "disable"}}
    return graph | gen


def a14b_note(f: dict) -> str:
    first = math.ceil(0.75 * f["steps"])
    gated = f"step {first}" if first == f["steps"] - 1 else f"steps {first}-{f['steps'] - 1}"
    return NOTE_A14B.format(split=f["split"], steps=f["steps"], cfg=f["cfg"], gated=gated,
                            lightning=LIGHTNING_NOTE if "loras" in f else "")


NOTE_TWO_PEOPLE = """PersonalVideo: two people in one video, each with their own identity adapter ({name}).

- Train one adapter per person (the training workflow, once per photo), then pick them in the two Load Identity Adapter nodes and the two people's photos in Load Image.
- Routed Identity: one per person, chained (person 1 first). Apply Identity Adapters (Routed): until the gate (the last quarter) the base model lays out the video; at the gate its prediction of the clean video is decoded, the faces are found and followed over frames, each face is given to the person whose reference it resembles most (assign_by = closest reference; 'left to right' uses the chain order instead), and from then on each adapter acts only on its own face's region. Everything else stays the base model's.
- The prompt should show both people with their faces visible. More or fewer faces than people at the gate: the faces found are routed and a warning in the console names what did not fit (face_count_mismatch 'stop with an error' stops instead).
- Evaluate Video with reference_2 connected scores each person (faces matched to people) and the identity-bleed rate. For an honest score use another insightface pack than the one the adapters were trained with (see the evaluate workflow)."""


def two_people_nodes(f: dict) -> dict:
    """Two photos, two adapters, one prompt naming two people, regions found automatically at the gate."""
    graph = base_nodes(f) | {"face_model": {"class_type": "PersonalVideoLoadIdentityRewardModel",
                                            "inputs": {"pack": "antelopev2", "det_size": 640, "det_threshold": 0.5}}}
    for i in (1, 2):
        graph[f"photo_{i}"] = {"class_type": "LoadImage", "inputs": {"image": f"person_{i}.jpg"}}
        graph[f"reference_{i}"] = {"class_type": "PersonalVideoLoadReferenceFaces", "inputs": {
            "identity_reward": ["face_model", 0], "images": [f"photo_{i}", 0], "augmentations": 8,
            "crop_jitter": 0.05, "colour_jitter": 0.1, "seed": 0}}
        graph[f"adapter_{i}"] = {"class_type": "PersonalVideoLoadIdentityAdapter",
                                 "inputs": {"lora_name": f"personalvideo/identity_person_{i}_00001_.safetensors"}}
        graph[f"person_{i}"] = {"class_type": "PersonalVideoRoutedIdentity", "inputs": {
            "adapter": [f"adapter_{i}", 0], "strength": 1.0, "reference": [f"reference_{i}", 0]}
            | ({"identities": ["person_1", 0]} if i == 2 else {})}
    prompt = ("a woman and a man sitting side by side at a cafe table, talking and laughing, both faces clearly "
              "visible, warm afternoon light, the camera slowly pushes in")
    graph |= generation_nodes(f, ["adapter_1", 0], "two_people_wan21")
    del graph["style"]
    graph["gated"] = {"class_type": "PersonalVideoApplyRoutedIdentityAdapters", "inputs": {
        "model": ["model", 0], "identities": ["person_2", 0], "regions": "automatic (faces at the gate)",
        "assign_by": "closest reference", "region_scale": 1.8, "face_count_mismatch": "route the faces found",
        "gate_start": 0.75, "gate_mode": "steps", "override_gate_start": False, "vae": ["vae", 0],
        "identity_reward": ["face_model", 0]}}
    graph["positive"]["inputs"]["text"] = prompt
    graph["evaluate"] = {"class_type": "PersonalVideoEvaluateVideo", "inputs": {
        "images": ["decode", 0], "reference": ["reference_1", 0], "identity_reward": ["face_model", 0],
        "prompt": prompt, "fps": 16.0, "reference_2": ["reference_2", 0]}}
    return graph


COLUMNS = {"high_lora": 1, "low_lora": 1, "model_shift": 1, "noise": 3, "sampler_select": 3, "sigmas": 3,
           "guider": 3, "conditioning": 3, "summary": 4, "high_model": 0, "high_shift": 1, "low_shift": 1,
           "sampler_high": 4, "model": 0, "clip": 0, "vae": 0, "photo": 1, "face_model": 1, "hps": 1, "reference": 2,
           "prompts": 2,
           "faces": 3, "train": 3, "curve": 4, "save": 4, "adapter": 1, "style": 1, "gated": 2, "positive": 2,
           "negative": 2, "latent": 3, "sampler": 4, "decode": 5, "video": 6,
           "frames": 1, "eval_face_model": 1, "evaluate": 3, "eval_chart": 4, "photo_1": 1, "photo_2": 1,
           "reference_1": 2, "reference_2": 2, "adapter_1": 1, "adapter_2": 1, "person_1": 3, "person_2": 3}


def workflows() -> dict[str, tuple[dict, str]]:
    out = {}
    for family, f in FAMILIES.items():
        train = base_nodes(f) | training_nodes(family) | {
            "save": {"class_type": "PersonalVideoSaveIdentityAdapter", "inputs": {
                "adapter": ["train", 0], "filename_prefix": f"personalvideo/identity_{family}",
                "gate_start": 0.75, "model": ["model", 0], "override_gate_start": False,
                "expert": "from adapter"}}}
        out[f"train_identity_adapter_{family}"] = (train, NOTE_TRAIN.format(name=f["name"]))
    f = FAMILIES["wan21"]
    gen = base_nodes(f) | {"adapter": {"class_type": "PersonalVideoLoadIdentityAdapter",
                                       "inputs": {"lora_name": "personalvideo/identity_wan21_00001_.safetensors"}}}
    gen |= generation_nodes(f, ["adapter", 0], "wan21")
    out["generate_with_identity_adapter_wan21"] = (gen, NOTE_GENERATE.format(name=f["name"]))
    out["evaluate_video"] = ({
        "frames": {"class_type": "LoadImage", "inputs": {"image": "personalvideo_wan21.webp"}},
        "photo": {"class_type": "LoadImage", "inputs": {"image": "reference.jpg"}},
        "eval_face_model": {"class_type": "PersonalVideoLoadIdentityRewardModel",
                            "inputs": {"pack": "buffalo_l", "det_size": 640, "det_threshold": 0.5}},
        "reference": {"class_type": "PersonalVideoLoadReferenceFaces",
                      "inputs": {"identity_reward": ["eval_face_model", 0], "images": ["photo", 0],
                                 "augmentations": 8, "crop_jitter": 0.05, "colour_jitter": 0.1, "seed": 0}},
        "hps": {"class_type": "PersonalVideoLoadSemanticRewardModel",
                "inputs": {"model_file": "HPS_v2.1_compressed.pt", "architecture": "ViT-H-14"}},
        "evaluate": {"class_type": "PersonalVideoEvaluateVideo", "inputs": {
            "images": ["frames", 0], "reference": ["reference", 0], "identity_reward": ["eval_face_model", 0],
            "prompt": "a woman dancing in the rain on a city street at night, neon reflections, the camera "
                      "circles around her", "fps": 16.0, "clip": ["hps", 0]}},
        "eval_chart": {"class_type": "PreviewImage", "inputs": {"images": ["evaluate", 2]}},
    }, NOTE_EVALUATE)
    both = base_nodes(f) | training_nodes("wan21") | generation_nodes(f, ["train", 0], "wan21")
    out["train_and_generate_wan21"] = (both, NOTE_BOTH.format(name=f["name"]))
    out["train_and_generate_wan22_a14b"] = (wan22_a14b_nodes(), a14b_note(A14B))
    out["train_and_generate_wan22_a14b_4step_lora"] = (wan22_a14b_nodes(A14B_LIGHTNING, "wan22_a14b_4step_lora"),
                                                       a14b_note(A14B_LIGHTNING))
    gen = generation_nodes(FAMILIES["wan21"], ["train", 0], "wan21")
    out |= family_workflows(training_nodes, gen["positive"]["inputs"]["text"], gen["negative"]["inputs"]["text"])
    out["generate_two_people_routed_wan21"] = (two_people_nodes(f), NOTE_TWO_PEOPLE.format(name=f["name"]))
    return out


def main() -> None:
    from dev.comfy_runtime import ComfyRuntime
    from dev.ui_workflow import api_to_ui

    ComfyRuntime.boot(Path(tempfile.mkdtemp(prefix="pv_make_workflows_")), with_dev_nodes=False)
    folder = REPO / "workflows"
    folder.mkdir(exist_ok=True)
    for name, (graph, note) in workflows().items():
        ui = api_to_ui(graph, columns=COLUMNS, notes=[(note, (60, -340))])
        (folder / f"{name}.json").write_text(json.dumps(ui, indent=1) + "\n")
        print(f"wrote workflows/{name}.json ({len(graph)} nodes)")


if __name__ == "__main__":
    main()
