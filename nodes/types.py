"""What the pack's node schemas share: the menu categories, the pack's own socket types and the inputs that
several nodes declare alike."""

from __future__ import annotations

from comfy_api.latest import io

from ..training.adapter.gate import DEFAULT_GATE_START

CATEGORY = "PersonalVideo"
ADAPTER_CATEGORY = CATEGORY + "/Adapter"
REWARDS_CATEGORY = CATEGORY + "/Rewards"
TRAINING_CATEGORY = CATEGORY + "/Training"
EVALUATION_CATEGORY = CATEGORY + "/Evaluation"

IdentityReward = io.Custom("PERSONALVIDEO_IDENTITY_REWARD")  # training/identity/reward.py: IdentityRewardModel
Reference = io.Custom("PERSONALVIDEO_REFERENCE")  # training/identity/reference.py: ReferenceIdentity
SemanticReward = io.Custom("PERSONALVIDEO_SEMANTIC_REWARD")  # training/semantic/reward.py: SemanticRewardModel
PromptBankType = io.Custom("PERSONALVIDEO_PROMPT_BANK")  # training/prompts.py: PromptBank
FaceEvaluator = io.Custom("PERSONALVIDEO_FACE_EVALUATOR")  # evaluation/dlib_face.py: DlibFaceEvaluator
RoutedIdentities = io.Custom("PERSONALVIDEO_ROUTED_IDENTITIES")  # routing_nodes.py: a list of RoutedIdentity


def adapter_input(optional: bool = False) -> io.Input:
    return io.LoraModel.Input(
        "adapter", optional=optional,
        tooltip="The identity adapter: from the trainer, from Load Identity Adapter, or any LORA_MODEL "
                "(e.g. from core's Train LoRA / Load LoRA Model nodes).")


def gate_start_input(what: str) -> io.Input:
    return io.Float.Input(
        "gate_start", default=DEFAULT_GATE_START, min=0.0, max=1.0, step=0.01,
        tooltip=f"Gate start to {what}, used only with override_gate_start on (otherwise the adapter's own "
                "value is used). The adapter acts from step ceil(gate_start x N) of the N steps of the whole "
                "sampling (0.75 = last quarter, 0 = always on, 1 = never).")


def override_input(what: str) -> io.Input:
    return io.Boolean.Input(
        "override_gate_start", default=False, optional=True,
        tooltip=f"Off: {what} the gate start the adapter carries (recorded by training or in its file; "
                "0.75 when it has none, e.g. a LoRA from core's trainer). On: the gate_start value above.")
