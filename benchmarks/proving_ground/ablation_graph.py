"""How an ablation's files reach ComfyUI (``install``) and the API graphs of an arm (``train_graph``,
``sample_graph``); the run itself is ``ablation_setup.Setup``.

The graphs are core nodes and the pack's nodes, wired as a user would: UNETLoader (+ the high-noise expert for
Wan 2.2 A14B) -> ModelSamplingSD3, VAELoader, CLIPLoader / DualCLIPLoader (or the dev text stand-in for models
without a real small text encoder), Load Identity Reward Model, Load Image -> Load Reference Faces; a trained arm
first runs Prompt Bank -> Train Identity Adapter -> Save Identity Adapter; then every arm (Load Identity Adapter ->
Apply Identity Adapter (Gated) ->) per prompt and seed CLIPTextEncode -> EmptyHunyuanLatentVideo -> KSampler (A14B:
two KSamplerAdvanced, as ComfyUI's Wan 2.2 template) -> VAEDecode -> Evaluate Video.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks.proving_ground.ablation_schedule import expert_split, gate_start
from benchmarks.proving_ground.ablation_setup import ARMS, Setup
from dev.comfy_runtime import Graph

def slug(arm: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in arm).strip("_")


# --- files into the running ComfyUI's folders ---------------------------------------------------------------

def _place(src: Path, folder: Path) -> str:
    """Link ``src`` into ``folder`` (a ComfyUI model folder) under its own name; returns that name."""
    src = Path(src).resolve()
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / src.name
    if target.is_symlink() or target.exists():
        if target.resolve() == src:
            return src.name
        if not target.is_symlink():
            raise FileExistsError(f"{target} exists and is not {src}; rename one of them")
        target.unlink()
    target.symlink_to(src, target_is_directory=src.is_dir())
    return src.name


def install(rt, setup: Setup) -> dict[str, object]:
    """Link every file of ``setup`` into ``rt``'s model folders and copy the photos to its input folder; returns
    the names the loader nodes take."""
    models = rt.base_dir / "models"
    photos = []
    for i, photo in enumerate(setup.photos):
        name = f"ablation_reference_{i}{Path(photo).suffix}"
        shutil.copy(photo, rt.base_dir / "input" / name)
        photos.append(name)
    place = lambda path, kind: None if path is None else _place(path, models / kind)  # noqa: E731
    return {
        "diffusion_model": place(setup.diffusion_model, "diffusion_models"),
        "high_noise_model": place(setup.high_noise_model, "diffusion_models"),
        "vae": place(setup.vae, "vae"),
        "text_encoders": [place(p, "text_encoders") for p in setup.text_encoders],
        "pack": place(setup.pack, "insightface/models"),
        "eval_pack": place(setup.eval_pack, "insightface/models"),
        "hps": place(setup.hps, "hpsv2"),
        "clip_t": place(setup.clip_t, "hpsv2"),
        "dlib": None if setup.dlib is None else "models/dlib/" + _place(setup.dlib, models / "dlib"),
        "photos": photos,
    }


# --- the graph of one arm ---------------------------------------------------------------------------------

def _text_encoder(g: Graph, setup: Setup, names: dict):
    files = names["text_encoders"]
    if len(files) == 1:
        return g.add("CLIPLoader", clip_name=files[0], type=setup.text_encoder_type, device="default")
    if len(files) == 2:
        return g.add("DualCLIPLoader", clip_name1=files[0], clip_name2=files[1], type=setup.text_encoder_type,
                     device="default")
    width, pooled, tokens = setup.standin_text
    return g.add("PersonalVideoDevCLIPStandIn", width=width, pooled_width=pooled, tokens=tokens)


def _diffusion_model(g: Graph, setup: Setup, name: str):
    model = g.add("UNETLoader", unet_name=name, weight_dtype=setup.weight_dtype)
    return model if setup.shift is None else g.add("ModelSamplingSD3", model=model, shift=setup.shift)


def _loaders(g: Graph, setup: Setup, names: dict) -> dict:
    """Links of what every graph of an arm loads: model(s), VAE, text encoder, face models, the reference."""
    parts = {"model": _diffusion_model(g, setup, names["diffusion_model"]),
             "vae": g.add("VAELoader", vae_name=names["vae"]), "clip": _text_encoder(g, setup, names)}
    parts["high"] = (None if names["high_noise_model"] is None
                     else _diffusion_model(g, setup, names["high_noise_model"]))
    parts["identity"] = g.add("PersonalVideoLoadIdentityRewardModel", pack=names["pack"], det_size=640,
                              det_threshold=0.5)
    images = {("images" if i == 0 else f"images_{i + 1}"): g.add("LoadImage", image=photo)
              for i, photo in enumerate(names["photos"])}
    parts["reference"] = g.add("PersonalVideoLoadReferenceFaces", identity_reward=parts["identity"], augmentations=4,
                               crop_jitter=0.05, colour_jitter=0.1, seed=0, **images)
    parts["evaluator"] = (None if names["dlib"] is None else g.add(
        "PersonalVideoLoadDlibFaceEvaluator", folder=names["dlib"], detector="hog", upsample=2))
    return parts


def train_graph(setup: Setup, arm: str, names: dict, run_id: str) -> tuple[Graph, dict]:
    """Prompt Bank -> Train Identity Adapter -> Save Identity Adapter for a trained arm; returns the graph and the
    capture keys of the saved file's name, the training curve image and the summary, and the run's name (its
    checkpoint holds the per-step history)."""
    g = Graph()
    parts = _loaders(g, setup, names)
    start, scr = gate_start(setup, arm), ARMS[arm][1]
    bank = g.add("PersonalVideoPromptBank", subject=setup.subject, negative_prompt=setup.negative,
                 user_prompts="\n".join(setup.train_prompts or setup.prompts), use_built_in=setup.built_in_prompts)
    extra = {}
    if scr:
        extra["semantic_reward"] = g.add("PersonalVideoLoadSemanticRewardModel", model_file=names["hps"],
                                         architecture=setup.hps_architecture)
    if setup.train_face_evaluator and parts["evaluator"] is not None:
        extra["face_evaluator"] = parts["evaluator"]
    if parts["high"] is not None:
        extra |= {"high_noise_model": parts["high"], "expert_boundary": setup.expert_boundary}
    run_name = f"ablation_{run_id}_{slug(arm)}"
    trained = g.add(
        "PersonalVideoTrainIdentityAdapter", model=parts["model"], clip=parts["clip"], vae=parts["vae"],
        reference=parts["reference"], identity_reward=parts["identity"], prompt_bank=bank, steps=setup.train_steps,
        learning_rate=setup.learning_rate, rank=setup.rank, alpha=setup.alpha, layers=setup.layers,
        gate_start=start, sampling_steps=setup.train_value("sampling_steps"), sampler_name=setup.sampler,
        scheduler=setup.scheduler, cfg=setup.train_value("cfg"), width=setup.train_value("width"),
        height=setup.train_value("height"), frames=setup.train_value("frames"),
        frames_per_reward=setup.frames_per_reward, icr_weight=1.0, scr_weight=setup.scr_weight,
        scr_temperature=setup.scr_temperature, backprop_last_k=setup.backprop_last_k,
        checkpoint_blocks=setup.checkpoint_blocks, max_grad_norm=setup.max_grad_norm, seed=setup.train_seed,
        save_every=0, run_name=run_name, resume=False, **extra)
    saved = g.add("PersonalVideoSaveIdentityAdapter", adapter=trained, filename_prefix=f"ablation/{run_id}/{slug(arm)}",
                  gate_start=start, model=parts["model"], override_gate_start=False)
    keys = {"run_name": run_name}
    for output, key in ((saved, "adapter_file"), ([trained[0], 1], "curve"), ([trained[0], 2], "summary")):
        keys[key] = f"{arm}|{key}"
        g.capture(output, keys[key])
    return g, keys


def _sample(g: Graph, setup: Setup, model, high, positive, negative, seed: int):
    """Denoised latent of one clip: KSampler, or the Wan 2.2 template's two KSamplerAdvanced."""
    latent = g.add("EmptyHunyuanLatentVideo", width=setup.width, height=setup.height, length=setup.frames,
                   batch_size=1)
    common = dict(cfg=setup.cfg, sampler_name=setup.sampler, scheduler=setup.scheduler, positive=positive,
                  negative=negative, steps=setup.steps)
    if high is None:
        return g.add("KSampler", model=model, latent_image=latent, seed=seed, denoise=1.0, **common)
    split = expert_split(setup, setup.steps)
    first = g.add("KSamplerAdvanced", model=high, latent_image=latent, add_noise="enable", noise_seed=seed,
                  start_at_step=0, end_at_step=split, return_with_leftover_noise="enable", **common)
    return g.add("KSamplerAdvanced", model=model, latent_image=first, add_noise="disable", noise_seed=seed,
                 start_at_step=split, end_at_step=10000, return_with_leftover_noise="disable", **common)


def sample_graph(setup: Setup, arm: str, names: dict, adapter_file: str | None) -> tuple[Graph, dict]:
    """Every prompt and seed of an arm, sampled and scored: with ``adapter_file`` (as Load Identity Adapter lists
    it) through Apply Identity Adapter at the arm's gate, without it the base model. Returns the graph and the
    capture keys ({"clips": [(prompt, seed, key)], "identity": key of the identity reward model})."""
    g = Graph()
    parts = _loaders(g, setup, names)
    model = parts["model"]
    if adapter_file is not None:
        adapter = g.add("PersonalVideoLoadIdentityAdapter", lora_name=adapter_file)
        model = g.add("PersonalVideoApplyIdentityAdapter", model=model, adapter=adapter, strength=1.0,
                      gate_start=gate_start(setup, arm), gate_mode="steps", override_gate_start=True)
    scoring = {}
    if parts["evaluator"] is not None:
        scoring["face_evaluator"] = parts["evaluator"]
    if names["clip_t"] is not None:
        scoring["clip"] = g.add("PersonalVideoLoadSemanticRewardModel", model_file=names["clip_t"],
                                architecture=setup.clip_t_architecture)
    if names["eval_pack"] is not None:
        scoring["second_identity_reward"] = g.add("PersonalVideoLoadIdentityRewardModel", pack=names["eval_pack"],
                                                  det_size=640, det_threshold=0.5)
    keys = {"clips": [], "identity": f"{arm}|identity"}
    g.capture(parts["identity"], keys["identity"])
    negative = g.add("CLIPTextEncode", clip=parts["clip"], text=setup.negative)
    for p, prompt in enumerate(setup.prompts):
        positive = g.add("CLIPTextEncode", clip=parts["clip"], text=prompt)
        for seed in setup.seeds:
            latent = _sample(g, setup, model, parts["high"], positive, negative, seed)
            frames = g.add("VAEDecode", samples=latent, vae=parts["vae"])
            report = g.add("PersonalVideoEvaluateVideo", images=frames, reference=parts["reference"],
                           identity_reward=parts["identity"], prompt=prompt, fps=setup.fps, **scoring)
            key = f"{arm}|{p}|{seed}"
            g.capture(frames, key + "|frames")
            g.capture([report[0], 1], key + "|json")
            keys["clips"].append((prompt, seed, key))
    return g, keys
