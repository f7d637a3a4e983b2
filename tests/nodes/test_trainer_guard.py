"""The reward-hacking guard in the trainer node, in real ComfyUI: a dlib face evaluator connected to Train Identity
Adapter watches both videos of every step, and the summary sets its gain beside the reward's.

Stand-in, said plainly: a tiny random model draws no faces and dlib finds none in its frames, so the test blends a
real photo into the decoded reward frames (90% photo, 10% decoded, gradient kept through the decoded part) by
wrapping the trainer's decode_frames. Everything else is the real node path: the trainer node, the dlib loader
node, the reference's context crops, dlib on the frames.
"""

from __future__ import annotations

import math

import torch

from dev.face_assets import load_photo, make_dlib_folder
from graphs import pack_module
from test_trainer_comfy import rt, train_graph  # noqa: F401  (rt: the trainer tests' module fixture)


def test_trainer_node_reports_the_independent_recognizer(rt):  # noqa: F811
    make_dlib_folder(rt.model_dir("dlib") / "guard")
    trainer_mod = pack_module("training.loop.trainer")
    original = trainer_mod.Trainer.decode_frames
    photo = load_photo("obama2.jpg")[:626]  # the top square of the portrait, where the face is

    def with_a_face(self, latent, frames):
        decoded = original(self, latent, frames)
        face = torch.nn.functional.interpolate(photo.permute(2, 0, 1)[None], size=decoded.shape[1:3],
                                               mode="bilinear", antialias=True)[0].permute(1, 2, 0)
        return 0.9 * face.to(decoded) + 0.1 * decoded

    trainer_mod.Trainer.decode_frames = with_a_face
    try:
        g, tr, *_ = train_graph("wan21", steps=2, run_name="guard", width=256, height=256)
        dlib = g.add("PersonalVideoLoadDlibFaceEvaluator", folder="models/dlib/guard", detector="hog", upsample=1)
        g.nodes[tr[0]]["inputs"]["face_evaluator"] = dlib
        g.capture([tr[0], 2], "summary")
        rt.run(g.nodes)
    finally:
        trainer_mod.Trainer.decode_frames = original
    summary = rt.captured()["summary"]
    line = next(line for line in summary.splitlines() if line.startswith("independent recognizer"))
    independent = float(line.split(":")[1].split(";")[0])
    assert not math.isnan(independent) and abs(independent) < 0.2, line  # tuned vs base: both ~ the photo
    assert "reward recognizer" in line
