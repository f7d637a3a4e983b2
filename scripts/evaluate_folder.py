"""Evaluate every video in a folder against a reference photo: one JSON line per video.

    .venv/bin/python scripts/evaluate_folder.py VIDEOS_DIR --reference PHOTO --pack INSIGHTFACE_PACK_DIR \
        [--hps HPS_v2.1_compressed.pt --prompt "the prompt"] [--dlib DLIB_MODELS_DIR] [--fps 16] > results.jsonl

The same metrics as the Evaluate Video node (evaluation/metrics.evaluate_video). Videos are decoded with
PyAV (a ComfyUI dependency) or, for the animated WEBPs the pack's workflows write, PIL; every
.mp4/.webm/.mkv/.mov/.gif/.webp in the folder is scored. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".mov", ".gif", ".webp"}


def import_pack():
    """The pack's evaluation modules (the installed package personalvideo: scripts/setup_env.sh)."""
    from personalvideo.evaluation import metrics
    from personalvideo.training.identity import reference
    from personalvideo.training.identity import reward as identity_reward
    from personalvideo.training.semantic import reward as semantic_reward

    return identity_reward, metrics, reference, semantic_reward


def read_video(path: Path) -> tuple[torch.Tensor, float]:
    """Frames [F, H, W, 3] in [0, 1] and the frame rate (animated WEBP through PIL, the rest through PyAV)."""
    if path.suffix.lower() == ".webp":
        from PIL import Image, ImageSequence

        with Image.open(path) as image:
            frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(image)]
            duration = image.info.get("duration") or 62
        if len(frames) < 2:
            raise ValueError(f"{path.name}: {len(frames)} frame(s), expected a video of at least 2 frames")
        return torch.from_numpy(np.stack(frames).astype(np.float32) / 255.0), 1000.0 / duration

    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 16)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    if len(frames) < 2:
        raise ValueError(f"{path.name}: {len(frames)} frame(s), expected a video of at least 2 frames")
    return torch.from_numpy(np.stack(frames).astype(np.float32) / 255.0), fps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", type=Path)
    parser.add_argument("--reference", type=Path, required=True, help="photo of the person")
    parser.add_argument("--pack", type=Path, required=True, help="insightface pack folder (detector + recognizer)")
    parser.add_argument("--hps", type=Path, help="HPSv2 model file for CLIP-T / temporal consistency")
    parser.add_argument("--architecture", default="ViT-H-14")
    parser.add_argument("--prompt", default="")
    parser.add_argument("--dlib", type=Path, help="folder with dlib's face models: an independent Face Sim")
    parser.add_argument("--fps", type=float, help="override the videos' frame rate")
    args = parser.parse_args(argv)
    identity_reward, metrics, reference, semantic_reward = import_pack()
    from PIL import Image

    model = identity_reward.load_identity_reward_model(args.pack)
    photo = torch.from_numpy(np.asarray(Image.open(args.reference).convert("RGB"), dtype=np.float32) / 255.0)
    ref = reference.build_reference(model, [photo])
    sem = semantic_reward.load_semantic_reward_model(args.hps, args.architecture) if args.hps else None
    evaluator = evaluator_ref = None
    if args.dlib:
        from personalvideo.evaluation.dlib_face import DlibFaceEvaluator

        evaluator = DlibFaceEvaluator.load(args.dlib)
        evaluator_ref = evaluator.reference_descriptor([photo])
    videos = sorted(p for p in args.videos.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        print(f"{args.videos}: no video files ({', '.join(sorted(VIDEO_SUFFIXES))})", file=sys.stderr)
        return 2
    for path in videos:
        frames, fps = read_video(path)
        result = metrics.evaluate_video(frames, ref.embedding, model, args.prompt, args.fps or fps, sem,
                                        face_evaluator=evaluator, evaluator_reference=evaluator_ref)
        print(json.dumps({"video": path.name} | result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
