"""The reward-hacking guard in the trainer node, in real ComfyUI: a dlib face evaluator connected to Train Identity
Adapter watches both videos of every step, and the summary sets its gain beside the reward's.

Stand-in, said plainly: a tiny random model draws no faces and dlib finds none in its frames, so the test blends a
real photo into the decoded reward frames (90% photo, 10% decoded, gradient kept through the decoded part) by
wrapping the trainer's decode_frames: another photo of the reference person into the tuned branch's frames, a
photo of another person into the source branch's, so the gain the guard must report is known to be large.
Everything else is the real node path: the trainer node, the dlib loader node, the reference's context crops, dlib
on the frames.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dev.face_assets import load_photo, make_dlib_folder
from graphs import pack_module
from personalvideo.evaluation.dlib_face import DlibFaceEvaluator
from test_trainer_comfy import rt, train_graph  # noqa: F401  (rt: the trainer tests' module fixture)


def test_trainer_node_reports_the_independent_recognizer(rt):  # noqa: F811
    folder = make_dlib_folder(rt.model_dir("dlib") / "guard")
    trainer_mod = pack_module("training.loop.trainer")
    original = trainer_mod.Trainer.decode_frames
    # the top square of each portrait, where the face is; the reference photo is obama.jpg
    photos = {branch: photo[: photo.shape[1]] for branch, photo in
              (("tuned", load_photo("obama2.jpg")), ("source", load_photo("biden.jpg")))}
    seen = []

    def with_a_face(self, latent, frames):
        decoded = original(self, latent, frames)
        branch = "tuned" if torch.is_grad_enabled() else "source"  # the source branch decodes without gradient
        face = torch.nn.functional.interpolate(photos[branch].permute(2, 0, 1)[None], size=decoded.shape[1:3],
                                               mode="bilinear", antialias=True)[0].permute(1, 2, 0)
        out = 0.9 * face.to(decoded) + 0.1 * decoded
        seen.append((branch, out.detach().clone()))
        return out

    trainer_mod.Trainer.decode_frames = with_a_face
    try:
        g, tr, *_ = train_graph("wan21", steps=2, run_name="guard", width=256, height=256)
        dlib = g.add("PersonalVideoLoadDlibFaceEvaluator", folder="models/dlib/guard", detector="hog", upsample=1)
        g.nodes[tr[0]]["inputs"]["face_evaluator"] = dlib
        g.capture([tr[0], 2], "summary")
        g.capture(g.nodes[tr[0]]["inputs"]["reference"], "reference")
        rt.run(g.nodes)
    finally:
        trainer_mod.Trainer.decode_frames = original
    summary, reference = rt.captured()["summary"], rt.captured()["reference"]
    line = next(line for line in summary.splitlines() if line.startswith("independent recognizer"))
    independent = float(line.split(":")[1].split(";")[0])
    assert [b for b, _ in seen] == ["tuned", "source"] * 2, [b for b, _ in seen]
    # Recomputed here with dlib on the very frames each branch was given: closeness = 1 - descriptor distance to
    # the reference (from its context crops), averaged over the frames; the summary's last fifth is step 2 of 2.
    evaluator = DlibFaceEvaluator.load(folder, detector="hog", upsample=1)
    ref = evaluator.reference_descriptor(reference.context_crops)

    def closeness(frames):
        descriptors = [evaluator.embed(frame) for frame in frames]
        assert all(d is not None for d in descriptors), "dlib must find the blended photo's face in every frame"
        return float(np.mean([1 - np.linalg.norm(d - ref) for d in descriptors]))

    (_, tuned), (_, source) = seen[2:]
    want = closeness(tuned) - closeness(source)
    # Known answer: the same person against another, about 0.6 against 0.15 on dlib's scale (evaluation/dlib_face.py;
    # 0.62 and 0.12 for these two photos blended with noise against obama.jpg, measured outside the trainer).
    assert want > 0.3, want
    assert independent == pytest.approx(want, abs=1.5e-3), (line, want)  # the summary prints 3 decimals
    assert "reward recognizer" in line and "WARNING" not in line, line  # ArcFace sees the same person gain too
