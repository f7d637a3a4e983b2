"""The ablation's command line: its arguments, and the Setup they make (files checked, arms and prompts resolved)."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from benchmarks.proving_ground.ablation_setup import ARMS, Setup

DEFAULTS = {f.name: f.default for f in fields(Setup)}


def _setting(group, name: str, kind=None, help: str | None = None) -> None:
    """``--name`` for the Setup field of that name, with the field's default."""
    default = DEFAULTS[name]
    group.add_argument("--" + name.replace("_", "-"), type=kind or type(default), default=default, help=help)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument_group("models (files; linked into the ComfyUI folder the run uses)")
    a.add_argument("--diffusion-model", type=Path, help="diffusion model file (Wan 2.2 A14B: the low-noise expert)")
    a.add_argument("--high-noise-model", type=Path, help="Wan 2.2 A14B: the high-noise expert")
    _setting(a, "expert_boundary", help="timestep fraction where the low-noise expert takes over (official T2V "
                                        "0.875; 0.9 splits 20 steps at shift 8 at step 10, as ComfyUI's template)")
    a.add_argument("--vae", type=Path)
    a.add_argument("--text-encoder", type=Path, nargs="+", default=[],
                   help="one file (CLIPLoader, e.g. umt5_xxl for Wan) or two (DualCLIPLoader: clip_l + llava_llama3 "
                        "for HunyuanVideo)")
    _setting(a, "text_encoder_type", help="CLIPLoader / DualCLIPLoader type (wan, hunyuan_video)")
    a.add_argument("--dev-text-standin", type=int, nargs="+", metavar="N",
                   help="no real text encoder: the dev stand-in (one seeded vector per word): WIDTH [POOLED_WIDTH "
                        "[TOKENS]] (default 0 and 16)")
    _setting(a, "weight_dtype", help="UNETLoader's weight_dtype")
    r = p.add_argument_group("reward and evaluation models")
    r.add_argument("--pack", type=Path, help="insightface pack folder (antelopev2, buffalo_l, ...): the identity "
                                              "reward and Face Sim")
    r.add_argument("--eval-pack", type=Path, help="a second insightface pack for a second ArcFace Face Sim")
    r.add_argument("--hps", type=Path, help="HPSv2 checkpoint (HPS_v2.1_compressed.pt): the semantic reward")
    _setting(r, "hps_architecture")
    r.add_argument("--clip-t", type=Path, help="OpenCLIP checkpoint for CLIP-T (e.g. ViT-H-14 laion2b, .safetensors)")
    _setting(r, "clip_t_architecture")
    r.add_argument("--dlib", type=Path, help="folder with dlib_face_recognition_resnet_model_v1.dat and "
                                              "shape_predictor_5_face_landmarks.dat: the independent Face Sim")
    r.add_argument("--train-face-evaluator", action="store_true",
                   help="dlib also watches every training step (an independent training curve; slower)")
    s = p.add_argument_group("person, prompts, sampling")
    s.add_argument("--photo", type=Path, nargs="+", default=[], help="1-4 reference photos of the person")
    s.add_argument("--prompt", nargs="+", default=[], help="evaluation prompts")
    s.add_argument("--prompts-file", type=Path, help="more evaluation prompts, one per line")
    s.add_argument("--train-prompt", nargs="+", default=[], help="the trainer's prompts (default: the evaluation "
                                                                   "prompts)")
    s.add_argument("--built-in-prompts", action="store_true", help="add the pack's 66 built-in prompts (--subject)")
    _setting(s, "subject", help="fills {subject} in the prompts (e.g. 'a man')")
    _setting(s, "negative")
    s.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULTS["seeds"]), help="sampling seeds per prompt")
    _setting(s, "shift", float, help="ModelSamplingSD3 shift on every expert (default: the model file's own)")
    for name in ("steps", "cfg", "sampler", "scheduler", "width", "height", "frames", "fps"):
        _setting(s, name)
    t = p.add_argument_group("training (every trained arm)")
    for name in ("train_steps", "learning_rate", "rank", "alpha", "layers", "frames_per_reward", "scr_weight",
                 "scr_temperature", "max_grad_norm", "backprop_last_k", "train_seed"):
        _setting(t, name)
    for name in ("sampling_steps", "width", "height", "frames"):
        _setting(t, "train_" + name, int, help="default: the sampling value")
    _setting(t, "train_cfg", float, help="default: --cfg")
    t.add_argument("--no-checkpoint-blocks", action="store_true")
    o = p.add_argument_group("run")
    o.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    o.add_argument("--output", type=Path, default=None, help="folder for ablation.json, clips and curves")
    o.add_argument("--comfy-base", type=Path, default=None,
                   help="ComfyUI base folder of this run (default .cache/ablation/comfy; one per process)")
    o.add_argument("--device", choices=("cpu", "cuda"), default=None, help="ComfyUI's device (default cpu)")
    o.add_argument("--table", type=Path, nargs="+", default=None,
                   help="only print the tables of these ablation.json files (e.g. arms run in parallel)")
    o.add_argument("--proving-ground", action="store_true",
                   help="preset: the proving-ground model, Obama from obama.jpg, the four motion prompts")
    o.add_argument("--smoke", action="store_true", help="with --proving-ground: the smoke recipe (draws no faces)")
    o.add_argument("--build", action="store_true", help="with --proving-ground: build the model if missing")
    return p


PATH_ARGS = ("diffusion_model", "high_noise_model", "vae", "pack", "eval_pack", "hps", "clip_t", "dlib",
             "prompts_file")


def setup_from_args(argv: list[str]) -> tuple[Setup, argparse.Namespace]:
    """The ``Setup`` the command line describes; ValueError naming the argument for a missing or bad input."""
    args = parser().parse_args(argv)
    for name in ("diffusion_model", "vae", "pack"):
        if getattr(args, name) is None:
            raise ValueError(f"--{name.replace('_', '-')}: required (or use --proving-ground)")
    for name in PATH_ARGS:
        value = getattr(args, name)
        if value is not None and not value.exists():
            raise ValueError(f"--{name.replace('_', '-')}: got {value}, which does not exist")
    for name, paths in (("text-encoder", args.text_encoder), ("photo", args.photo)):
        for path in paths:
            if not path.exists():
                raise ValueError(f"--{name}: got {path}, which does not exist")
    if bool(args.text_encoder) == bool(args.dev_text_standin):
        raise ValueError("text encoder: give --text-encoder FILE [FILE2] (the real one) or --dev-text-standin WIDTH "
                         f"(no real encoder); got {len(args.text_encoder)} files and stand-in {args.dev_text_standin}")
    if len(args.dev_text_standin or ()) > 3:
        raise ValueError(f"--dev-text-standin: got {args.dev_text_standin}, expected WIDTH [POOLED_WIDTH [TOKENS]]")
    prompts = list(args.prompt)
    if args.prompts_file:
        prompts += [line.strip() for line in args.prompts_file.read_text().splitlines() if line.strip()]
    standin = list(args.dev_text_standin or [4096])
    standin = tuple(standin + [4096, 0, 16][len(standin):])[:3]
    values = {f.name: getattr(args, f.name) for f in fields(Setup) if hasattr(args, f.name)}
    values |= dict(text_encoders=tuple(args.text_encoder), standin_text=standin, photos=tuple(args.photo),
                   prompts=tuple(prompts), train_prompts=tuple(args.train_prompt), seeds=tuple(args.seeds),
                   arms=tuple(args.arms), checkpoint_blocks=not args.no_checkpoint_blocks)
    setup = Setup(**values)
    return setup, args
