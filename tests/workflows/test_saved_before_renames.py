"""A workflow saved before two inputs were renamed still loads with its values: Train Identity Adapter's
checkpoint_every is now save_every (the resume file), Load Semantic Reward Model's checkpoint is now model_file.

ComfyUI's frontend gives a node's widgets their saved values by position (``widgets_values``), and the renamed widgets
kept their places; dev/ui_workflow.ui_to_api applies that rule. saved/train_identity_adapter_wan21_before_renames.json
is workflows/train_identity_adapter_wan21.json as dev/make_workflows.py wrote it before the renames.
"""

from __future__ import annotations

import json
from pathlib import Path

from dev import tiny_models
from dev.ui_workflow import ui_to_api
from test_workflows import rt  # noqa: F401  (the workflows' models in the test ComfyUI)

SAVED = Path(__file__).resolve().parent / "saved" / "train_identity_adapter_wan21_before_renames.json"


def _inputs(prompt: dict, class_type: str) -> dict:
    return next(node["inputs"] for node in prompt.values() if node["class_type"] == class_type)


def test_a_workflow_saved_before_the_renames_keeps_its_values(rt):  # noqa: F811
    import execution

    prompt = ui_to_api(json.loads(SAVED.read_text()))
    train = _inputs(prompt, "PersonalVideoTrainIdentityAdapter")
    hps = _inputs(prompt, "PersonalVideoLoadSemanticRewardModel")
    assert train["save_every"] == 50 and train["run_name"] == "identity_wan21" and train["resume"] is True
    assert hps["model_file"] == "HPS_v2.1_compressed.pt" and hps["architecture"] == "ViT-H-14"
    assert "checkpoint_every" not in train and "checkpoint" not in hps
    # ComfyUI accepts the prompt as its server would before running it (every input present and valid)
    ok, error, _, node_errors = rt.loop.run_until_complete(
        execution.validate_prompt("saved_before_renames", tiny_models.for_tiny_models(prompt), None))[:4]
    assert ok, (error, node_errors)
