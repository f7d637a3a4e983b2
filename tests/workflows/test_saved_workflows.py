"""Workflows saved before the trainer got ``expert_switch_step`` keep loading and running as they did.

``saved/`` holds the pack's workflow files that contain the trainer, byte for byte as they were on main before the
input was added (be6a123, also before the renames: test_saved_before_renames.py checks those with the Wan 2.1 file).
Saved workflows store widget values by position, so a new input
must not shift the old values: each old value must land on the input it had (checked against today's files,
which differ only by the new inputs' defaults, and for A14B by the template update), the new input must take its
default (0: split at expert_boundary), and the old A14B file must still run and split where its boundary says
(0.9 at shift 8: step 4 of the 8 tiny steps, as its two KSamplerAdvanced do). The frontend check
(test_frontend_loads.py) loads the same files in ComfyUI's own frontend.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dev import tiny_models
from dev.ui_workflow import ui_to_api
from test_workflows import rt  # noqa: F401  (the ComfyUI with the workflows' tiny models, photo and face packs)

HERE = Path(__file__).resolve().parent
SAVED = sorted((HERE / "saved").glob("*_before_renames.json"))
CURRENT = HERE.parents[1] / "workflows"
TRAINER = "PersonalVideoTrainIdentityAdapter"
NEW_INPUTS = {TRAINER: {"decode_gradient": "checkpointed", "expert_switch_step": 0}}
NEW_NODES = {"PreviewAny"}  # the trainer's summary on the canvas (issue 21)


def api(path: Path) -> dict:
    return ui_to_api(json.loads(path.read_text()))


def today(path: Path) -> Path:
    """The workflow file of today that ``path`` is an earlier save of."""
    return CURRENT / (path.stem.removesuffix("_before_renames") + ".json")


def test_the_saved_files_are_there():
    assert [today(p).stem for p in SAVED] == ["train_and_generate_wan21", "train_and_generate_wan22_a14b",
                                              "train_identity_adapter_hunyuan_video", "train_identity_adapter_wan21"]


def widgets_by_node_type(prompt: dict) -> dict[str, list[dict]]:
    """Each node type's widget values (inputs that are not links), in node-id order. Node ids are not compared:
    today's files gained nodes since (the trainer summary's Preview as Text), which renumbers the ones after."""
    out: dict[str, list[dict]] = {}
    for node_id in sorted(prompt, key=int):
        node = prompt[node_id]
        out.setdefault(node["class_type"], []).append(
            {k: v for k, v in node["inputs"].items() if not isinstance(v, list)})
    return out


@pytest.mark.parametrize("path", SAVED, ids=lambda p: p.stem)
def test_old_widget_values_land_on_their_inputs_and_new_inputs_take_defaults(comfy, path):
    old, new = widgets_by_node_type(api(path)), widgets_by_node_type(api(today(path)))
    assert set(new) - set(old) <= NEW_NODES and set(old) <= set(new), (sorted(old), sorted(new))
    for kind, nodes in old.items():
        assert len(new[kind]) == len(nodes), kind
        for node, now in zip(nodes, new[kind]):
            added = set(now) - set(node)
            assert added <= set(NEW_INPUTS.get(kind, {})), (kind, added)
            if today(path).stem == "train_and_generate_wan22_a14b":  # updated on purpose: today's template and split
                continue
            assert {k: now[k] for k in node} == node, kind
            assert all(now[k] == NEW_INPUTS[kind][k] for k in added)
    old = api(path)
    trainer = next(n["inputs"] for n in old.values() if n["class_type"] == TRAINER)
    assert "expert_switch_step" not in trainer  # the executor gives it the default, 0
    assert trainer["expert_boundary"] == (0.9 if "a14b" in path.stem else 0.875)
    assert trainer["resume"] is True and trainer["run_name"].startswith("identity_")  # the values before it


def test_old_a14b_file_still_splits_at_its_boundary(rt):
    prompt = tiny_models.for_tiny_models(api(HERE / "saved" / "train_and_generate_wan22_a14b_before_renames.json"))
    # its own resume file: today's A14B file (test_workflows.py) trains under the same run name with resume on
    trainer = next(n["inputs"] for n in prompt.values() if n["class_type"] == "PersonalVideoTrainIdentityAdapter")
    trainer["run_name"] = "saved_a14b_before_renames"
    shifts = {n["inputs"]["shift"] for n in prompt.values() if n["class_type"] == "ModelSamplingSD3"}
    first = next(n["inputs"] for n in prompt.values()
                 if n["class_type"] == "KSamplerAdvanced" and n["inputs"]["start_at_step"] == 0)
    assert shifts == {8.0} and (first["steps"], first["end_at_step"]) == (8, 4)
    outputs = rt.run(prompt)
    summary = next(o["text"][0] for o in outputs.values() if "text" in o and "experts:" in o["text"][0])
    assert ("high-noise steps 0-3 (no adapter), low-noise steps 4-7 (trained; adapter saved as expert low_noise), "
            "split at step 4 of 8 by expert_boundary 0.9 (in the graph: the first KSamplerAdvanced's end_at_step 4)"
            ) in summary, summary
