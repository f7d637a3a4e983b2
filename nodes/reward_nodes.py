"""Reward-model nodes: load the identity (ArcFace) and semantic (HPSv2) rewards, build the reference identity.

Thin glue over training/identity/reward.py, training/identity/reference.py and training/semantic/reward.py.
"""

from __future__ import annotations

import numpy as np
import torch
from comfy_api.latest import io

from ..training.identity.reference import ReferenceIdentity, build_reference
from ..training.identity.reward import IdentityRewardModel, load_identity_reward_model
from ..training.semantic.reward import HPS_ARCHITECTURE, SemanticRewardModel, load_semantic_reward_model
from . import paths
from .runtime.reward_devices import comfy_devices, reward_models_on
from .types import REWARDS_CATEGORY, IdentityReward, Reference, SemanticReward
from ..training.logs import pack_logger

log = pack_logger(__name__)


class LoadIdentityRewardModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonalVideoLoadIdentityRewardModel",
            display_name="Load Identity Reward Model",
            category=REWARDS_CATEGORY,
            description="Loads an insightface pack as the identity reward: its SCRFD face detector (onnxruntime) and "
                        "its ArcFace recognizer as a differentiable torch module.",
            inputs=[
                io.Combo.Input("pack", options=paths.insightface_packs(),
                               tooltip="Folder under models/insightface/models/ (antelopev2, buffalo_l, buffalo_s, "
                                       "...) holding an SCRFD detector with landmarks and an ArcFace recognizer."),
                io.Int.Input("det_size", default=640, min=160, max=1280, step=32,
                             tooltip="Detector input size in pixels; frames are resized to fit it (640 as insightface)."),
                io.Float.Input("det_threshold", default=0.5, min=0.05, max=0.95, step=0.05,
                               tooltip="Minimum detection score for a face to count."),
            ],
            outputs=[IdentityReward.Output(display_name="identity_reward",
                                           tooltip="The identity reward model (detector + differentiable ArcFace).")],
        )

    @classmethod
    def execute(cls, pack, det_size, det_threshold) -> io.NodeOutput:
        load_device, offload_device = comfy_devices()
        # ComfyUI runs nodes under inference_mode; tensors made there can never join autograd, and the
        # trainer back-propagates through this model.
        with torch.inference_mode(False):
            model = load_identity_reward_model(paths.insightface_pack_path(pack), det_size, det_threshold,
                                               load_device, offload_device)
        return io.NodeOutput(model)


def _preview(ref: ReferenceIdentity, size: int = 224) -> torch.Tensor:
    """The aligned crops side by side as an IMAGE batch, each labelled with its detection score."""
    from PIL import Image, ImageDraw

    out = []
    for i, (crop, face, n) in enumerate(zip(ref.crops, ref.faces, ref.face_counts)):
        img = Image.fromarray((crop.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)).resize((size, size))
        draw = ImageDraw.Draw(img)
        label = f"{i + 1}: score {face.score:.2f}" + (f" ({n} faces)" if n > 1 else "")
        draw.rectangle((0, 0, size, 16), fill=(0, 0, 0))
        draw.text((4, 2), label, fill=(255, 255, 255))
        out.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0))
    return torch.stack(out)


class LoadReferenceFaces(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        image_tip = ("More reference photos of the same person (any size; a batch or a list also works). "
                     "Optional.")
        return io.Schema(
            node_id="PersonalVideoLoadReferenceFaces",
            display_name="Load Reference Faces",
            category=REWARDS_CATEGORY,
            description="Detects and aligns the face in each reference photo and builds the reference identity: the "
                        "normalised mean ArcFace embedding over jittered views. One photo is enough.",
            is_input_list=True,
            inputs=[
                IdentityReward.Input("identity_reward", tooltip="From Load Identity Reward Model."),
                io.Image.Input("images", tooltip="Reference photo(s) of the person: a batch from Load Image, or a "
                                                 "list. Several faces in a photo: the largest is used."),
                io.Image.Input("images_2", optional=True, tooltip=image_tip),
                io.Image.Input("images_3", optional=True, tooltip=image_tip),
                io.Image.Input("images_4", optional=True, tooltip=image_tip),
                io.Int.Input("augmentations", default=8, min=0, max=64,
                             tooltip="Jittered views per reference averaged into its embedding (0: the plain crop)."),
                io.Float.Input("crop_jitter", default=0.05, min=0.0, max=0.3, step=0.01,
                               tooltip="Crop jitter strength: shift up to this fraction of the crop, scale +-this, "
                                       "rotation +-60x this degrees."),
                io.Float.Input("colour_jitter", default=0.1, min=0.0, max=0.5, step=0.01,
                               tooltip="Brightness, contrast and saturation change by up to this factor."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1,
                             tooltip="Seed of the augmentation: the same seed gives the same embedding."),
            ],
            outputs=[
                Reference.Output(display_name="reference", tooltip="The reference identity (embedding and crops)."),
                io.Image.Output(display_name="preview", tooltip="The aligned reference faces with detection scores."),
                io.String.Output(display_name="report",
                                 tooltip="Faces found per image and the pairwise similarity of the references "
                                         "(low values mean the photos may show different people)."),
            ],
        )

    @classmethod
    def execute(cls, identity_reward, images, augmentations, crop_jitter, colour_jitter, seed,
                images_2=None, images_3=None, images_4=None) -> io.NodeOutput:
        model: IdentityRewardModel = identity_reward[0]
        batches = [b for group in (images, images_2, images_3, images_4) if group for b in group]
        if any(b.shape[0] == 0 for b in batches) or not batches:
            raise ValueError("images: got an empty image batch; connect Load Image (or another node that "
                             "outputs at least one photo)")
        photos = [img for b in batches for img in b]
        with torch.inference_mode(False), reward_models_on(model.recognizer.load_device, model.recognizer):
            # outside inference mode: the embedding is used by the trainer's autograd graph
            ref = build_reference(model, photos, augmentations[0], crop_jitter[0], colour_jitter[0], seed[0])
        report = ref.report()
        log.info("%s", report)
        return io.NodeOutput(ref, _preview(ref), report)


class LoadSemanticRewardModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonalVideoLoadSemanticRewardModel",
            display_name="Load Semantic Reward Model",
            category=REWARDS_CATEGORY,
            description="Loads an HPSv2 / v2.1 model file as the semantic reward (OpenCLIP ViT-H-14 image-text "
                        "preference score, differentiable).",
            inputs=[
                # model_file was named checkpoint: saved workflows keep its value (widgets load by position)
                io.Combo.Input("model_file", options=paths.hpsv2_files(),
                               tooltip="HPS_v2_compressed.pt or HPS_v2.1_compressed.pt (or a .safetensors export) "
                                       "in models/hpsv2/."),
                io.String.Input("architecture", default=HPS_ARCHITECTURE,
                                tooltip="OpenCLIP model config the model file was trained from; HPSv2 and v2.1 "
                                        "are ViT-H-14."),
            ],
            outputs=[SemanticReward.Output(display_name="semantic_reward",
                                           tooltip="The semantic reward model (HPS scorer).")],
        )

    @classmethod
    def execute(cls, model_file, architecture) -> io.NodeOutput:
        load_device, offload_device = comfy_devices()
        with torch.inference_mode(False):  # see LoadIdentityRewardModel: the trainer differentiates through it
            model = load_semantic_reward_model(paths.hpsv2_path(model_file),
                                               architecture.strip() or HPS_ARCHITECTURE, load_device, offload_device)
        return io.NodeOutput(model)


class IdentitySimilarity(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonalVideoIdentitySimilarity",
            display_name="Identity Similarity",
            category=REWARDS_CATEGORY,
            description="Scores frames against the reference identity with the identity reward model: cosine "
                        "similarity per frame; frames without a face are excluded and counted.",
            inputs=[
                IdentityReward.Input("identity_reward", tooltip="From Load Identity Reward Model."),
                Reference.Input("reference", tooltip="From Load Reference Faces (built with the same model)."),
                io.Image.Input("images", tooltip="Frames to score (e.g. a decoded video)."),
            ],
            outputs=[
                io.Float.Output(display_name="mean_similarity",
                                tooltip="Mean cosine similarity over frames with a face (NaN when none has one)."),
                io.String.Output(display_name="report", tooltip="Per-frame similarity and frames without a face."),
            ],
        )

    @classmethod
    def execute(cls, identity_reward: IdentityRewardModel, reference: ReferenceIdentity, images) -> io.NodeOutput:
        reference.check_recognizer(identity_reward)
        with torch.no_grad(), reward_models_on(identity_reward.recognizer.load_device, identity_reward.recognizer):
            res = identity_reward.reward(images.to(identity_reward.recognizer.load_device), reference.embedding)
        per_frame = ", ".join("none" if not m else f"{float(s):.3f}" for s, m in zip(res.similarity, res.face_mask))
        report = (f"identity similarity over {res.frames_with_face} of {len(res.face_mask)} frames with a face: "
                  f"{res.mean_similarity:.3f}; frames without a face: {res.frames_without_face}\n"
                  f"per frame: {per_frame}")
        return io.NodeOutput(res.mean_similarity, report)


class SemanticScore(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonalVideoSemanticScore",
            display_name="Semantic Score",
            category=REWARDS_CATEGORY,
            description="Scores frames against a prompt with the semantic reward model (HPS: image-text cosine as "
                        "hpsv2 reports it, about 0.2-0.35 for good matches with the real HPSv2).",
            inputs=[
                SemanticReward.Input("semantic_reward", tooltip="From Load Semantic Reward Model."),
                io.Image.Input("images", tooltip="Frames to score."),
                io.String.Input("prompt", multiline=True, default="", tooltip="The text the frames should match."),
            ],
            outputs=[
                io.Float.Output(display_name="mean_score", tooltip="Mean HPS score over the frames."),
                io.String.Output(display_name="report", tooltip="Per-frame HPS scores."),
            ],
        )

    @classmethod
    def execute(cls, semantic_reward: SemanticRewardModel, images, prompt) -> io.NodeOutput:
        with torch.no_grad(), reward_models_on(semantic_reward.holder.load_device, semantic_reward.holder):
            scores = semantic_reward.score(images.to(semantic_reward.holder.load_device), prompt).cpu()
        report = "HPS per frame: " + ", ".join(f"{float(s):.4f}" for s in scores)
        return io.NodeOutput(float(scores.mean()), report)


NODES = [LoadIdentityRewardModel, LoadReferenceFaces, LoadSemanticRewardModel, IdentitySimilarity, SemanticScore]
