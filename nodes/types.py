"""What the pack's node schemas share: the menu categories and the pack's own socket types."""

from __future__ import annotations

from comfy_api.latest import io

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
