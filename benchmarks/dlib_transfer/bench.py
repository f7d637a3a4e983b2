"""How much of a deliberate ArcFace pixel hack the independent dlib evaluator sees, by face size.

For each scale of the photo of Biden (full size: face about 320 px wide) and each way of hacking
(landmarks kept from the original, or detected again every step as the trainer does), Adam steps on the
pixels toward the ArcFace embedding of Obama (dev/reward_hacking.py), 8-bit result; then ArcFace (the
evaluation's Face Sim, re-detecting) and dlib score it. Prints one JSON line per case, and the table rows.

    .venv/bin/python -m benchmarks.dlib_transfer.bench [--scales 1 0.75 0.5] [--steps 6 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]


def scaled(img: torch.Tensor, scale: float) -> torch.Tensor:
    if scale == 1:
        return img
    out = F.interpolate(img.permute(2, 0, 1)[None], scale_factor=scale, mode="bilinear", antialias=True)
    return out[0].permute(1, 2, 0).contiguous()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.75, 0.5])
    parser.add_argument("--steps", type=int, nargs="+", default=[6])
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--redetect", choices=["no", "yes", "both"], default="both")
    args = parser.parse_args()
    from dev.face_assets import load_photo, make_dlib_folder, make_pack
    from dev.reward_hacking import gap_closed, pixel_hack
    from personalvideo.evaluation.dlib_face import DlibFaceEvaluator, cosine
    from personalvideo.evaluation.metrics import face_similarity
    from personalvideo.training.identity.reference import build_reference
    from personalvideo.training.identity.reward import load_identity_reward_model

    tmp = Path(tempfile.mkdtemp())
    model = load_identity_reward_model(make_pack(tmp))
    evaluator = DlibFaceEvaluator.load(make_dlib_folder(tmp / "dlib"))
    photos = {n: load_photo(n) for n in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")}
    target = build_reference(model, [photos["obama.jpg"]], augmentations=0).embedding
    dlib_ref = evaluator.reference_descriptor([photos["obama.jpg"]])
    modes = {"no": [False], "yes": [True], "both": [False, True]}[args.redetect]
    rows = []
    for scale in args.scales:
        # Same-person levels at this scale (other photos of Obama, scaled the same way).
        others = [scaled(photos[n], scale) for n in ("obama2.jpg", "obama3.jpg")]
        same_arc = float(np.mean([face_similarity(o[None], target, model).score for o in others]))
        same = [evaluator.embed(o) for o in others]
        same_cos = float(np.mean([100 * cosine(d, dlib_ref) for d in same]))
        same_dist = float(np.mean([np.linalg.norm(d - dlib_ref) for d in same]))
        biden = scaled(photos["biden.jpg"], scale)
        arc0 = face_similarity(biden[None], target, model).score
        d0 = evaluator.similarity(biden[None], dlib_ref)
        for redetect in modes:
            for steps in args.steps:
                hacked = pixel_hack(model, biden, target, steps=steps, lr=args.lr, redetect=redetect)
                arc1 = face_similarity(hacked[None], target, model).score
                d1 = evaluator.similarity(hacked[None], dlib_ref)
                row = {"scale": scale, "size": list(biden.shape[:2]), "redetect": redetect, "steps": steps,
                       "max_change": round(float((hacked - biden).abs().max()), 3),
                       "arcface": [round(arc0, 2), round(arc1, 2), round(same_arc, 2)],
                       "dlib_cos": [round(d0.score, 2), round(d1.score, 2), round(same_cos, 2)],
                       "dlib_dist": [round(d0.distance, 4), round(d1.distance, 4), round(same_dist, 4)],
                       "closed": {"arcface": round(gap_closed(arc0, arc1, same_arc), 3),
                                  "dlib_cos": round(gap_closed(d0.score, d1.score, same_cos), 3),
                                  "dlib_dist": round(gap_closed(d0.distance, d1.distance, same_dist), 3)}}
                sys.stdout.write(json.dumps(row) + "\n")
                sys.stdout.flush()
                rows.append(row)
    for r in rows:
        a, c, d = r["arcface"], r["dlib_cos"], r["dlib_dist"]
        sys.stdout.write(
            f"| {r['scale']} ({r['size'][1]}x{r['size'][0]}) | {'every step' if r['redetect'] else 'once'} | "
            f"{r['steps']} | {r['max_change']} | {a[0]} -> {a[1]} ({a[2]}) | {c[0]} -> {c[1]} ({c[2]}) | "
            f"{d[0]} -> {d[1]} ({d[2]}) | {r['closed']['arcface']} / {r['closed']['dlib_cos']} / "
            f"{r['closed']['dlib_dist']} |\n")


if __name__ == "__main__":
    main()
