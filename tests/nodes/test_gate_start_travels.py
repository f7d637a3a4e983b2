"""The gate start (and the expert) travel with the adapter: Train records them, Save writes the adapter's own by
default, Apply reads the file's by default and reports which value it used. In real ComfyUI.

The training test reuses the trainer node setup of test_trainer_comfy.py (tiny random Wan 2.1, the real
w600k_mbf/SCRFD, a real photo; stand-ins said there). The gate checks compare against core nodes only: two
KSamplerAdvanced, the second on LoraLoaderModelOnly with the same file.
"""

from __future__ import annotations

import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from comfy_runtime_errors import graph_error
from dev import tiny_models
from graphs import base_graph, install_models, lora, rel_err, run_latent
from test_trainer_comfy import rt, train_graph  # noqa: F401  (rt: the trainer tests' module fixture)

STEPS = 8
IDENT = "identity_wan21.safetensors"  # a random LoRA without PersonalVideo metadata


@pytest.fixture(scope="module", autouse=True)
def models(comfy):
    install_models(comfy)


def header(comfy, name):
    with safe_open(str(comfy.model_dir("loras") / name), "pt") as f:
        return f.metadata()


def applied(g, model, lora_name, **over):
    """Load Identity Adapter + Apply with the node's default inputs, changed by ``over``."""
    adapter = g.add("PersonalVideoLoadIdentityAdapter", lora_name=lora_name)
    inputs = dict(model=model, adapter=adapter, strength=1.0, gate_start=0.75) | over
    return g.add("PersonalVideoApplyIdentityAdapter", **inputs)


def generate(comfy, lora_name, **over):
    """KSampler (8 steps) on the apply node's model; returns (latent, the node's report)."""
    g, model, pos, neg, latent = base_graph("wan21")
    m = applied(g, model, lora_name, **over)
    g.capture([m[0], 1], "report")
    g.capture(g.add("KSampler", model=m, positive=pos, negative=neg, latent_image=latent, seed=7, steps=STEPS,
                    cfg=3.0, sampler_name="euler", scheduler="simple", denoise=1.0), "out")
    comfy.run(g.nodes)
    captured = comfy.captured()
    return captured["out"]["samples"].clone(), captured["report"]


def split_reference(comfy, lora_name, gate_step):
    """Core nodes: the LoRA always on from ``gate_step`` of 8 on."""
    g, model, pos, neg, latent = base_graph("wan21")
    common = dict(positive=pos, negative=neg, noise_seed=7, steps=STEPS, cfg=3.0, sampler_name="euler",
                  scheduler="simple")
    first = g.add("KSamplerAdvanced", model=model, latent_image=latent, add_noise="enable", start_at_step=0,
                  end_at_step=gate_step, return_with_leftover_noise="enable", **common)
    second = g.add("KSamplerAdvanced", model=lora(g, model, lora_name), latent_image=first, add_noise="disable",
                   start_at_step=gate_step, end_at_step=10000, return_with_leftover_noise="disable", **common)
    return run_latent(comfy, g, second)


def save(comfy, adapter_node, g, prefix, **over):
    saved = g.add("PersonalVideoSaveIdentityAdapter", **(dict(adapter=adapter_node, filename_prefix=prefix,
                                                                gate_start=0.75) | over))
    g.capture(saved, "name")
    outputs = comfy.run(g.nodes)
    return comfy.captured()["name"], outputs[saved[0]]["text"][0]


def test_trained_at_0_6_saved_and_applied_with_defaults_gates_at_0_6(rt):  # noqa: F811
    g, tr, model, *_ = train_graph("wan21", steps=1, run_name="gate_0_6", gate_start=0.6, lr=0.1)
    g.capture(tr, "adapter")
    name, text = save(rt, tr, g, "travel/trained")  # default inputs: the widget still says 0.75
    adapter = rt.captured()["adapter"]
    assert adapter.metadata["personalvideo.gate_start"] == "0.6" and adapter.metadata["personalvideo.expert"] == ""
    meta = header(rt, name)
    assert meta["personalvideo.gate_start"] == "0.6" and meta["personalvideo.expert"] == ""
    assert "gate_start 0.6 (recorded in the adapter)" in text, text

    out, report = generate(rt, name)
    assert "gate_start 0.6 (recorded in the adapter)" in report and "expert unknown" in report, report
    at_5, at_6 = split_reference(rt, name, math.ceil(0.6 * STEPS)), split_reference(rt, name, 6)
    assert rel_err(out, at_5) <= 1e-5
    assert rel_err(at_6, at_5) > 1e-4, "gating at 0.75 must give another result, or this check means nothing"


def test_save_defaults_to_the_adapters_value_and_override_records_another(comfy):
    g = base_graph("wan21")[0]
    name, text = save(comfy, g.add("PersonalVideoLoadIdentityAdapter", lora_name=IDENT), g, "travel/plain")
    assert header(comfy, name)["personalvideo.gate_start"] == "0.75"
    assert "default: the adapter records none" in text, text

    g = base_graph("wan21")[0]
    name, text = save(comfy, g.add("PersonalVideoLoadIdentityAdapter", lora_name=IDENT), g, "travel/half",
                      gate_start=0.5, override_gate_start=True, expert="low_noise")
    meta = header(comfy, name)
    assert meta["personalvideo.gate_start"] == "0.5" and meta["personalvideo.expert"] == "low_noise"
    assert "override_gate_start on" in text and "expert low_noise (set on this node)" in text, text

    # Apply with defaults reads the file's 0.5 and expert; with the override on it uses the widget.
    from_file, report = generate(comfy, name)
    assert "gate_start 0.5 (recorded in the adapter)" in report
    assert "expert low_noise (recorded in the adapter)" in report, report
    assert rel_err(from_file, split_reference(comfy, name, 4)) <= 1e-5
    overridden, report = generate(comfy, name, gate_start=0.75, override_gate_start=True, expert="high_noise")
    assert "gate_start 0.75 (override_gate_start on)" in report and "expert high_noise (set on this node)" in report
    assert rel_err(overridden, split_reference(comfy, name, 6)) <= 1e-5
    assert rel_err(overridden, from_file) > 1e-4


def test_a_file_with_a_bad_gate_start_is_refused_naming_it(comfy):
    sd = tiny_models.random_lora("wan21")
    save_file(sd, str(comfy.model_dir("loras") / "bad_gate.safetensors"),
              metadata={"personalvideo.gate_start": "late"})
    with graph_error() as err:
        generate(comfy, "bad_gate.safetensors")
    assert "bad_gate.safetensors" in err.message and "'late'" in err.message
    assert "[0, 1]" in err.message and "override_gate_start" in err.message
    # ... and the override is the way out.
    out, report = generate(comfy, "bad_gate.safetensors", override_gate_start=True)
    assert torch.isfinite(out).all() and "override_gate_start on" in report


def test_workflows_saved_before_the_rename_keep_their_widget_values(comfy):
    """UI widget values are positional: gate_start took start_percent's place, the new widgets come after."""
    from dev.ui_workflow import ui_to_api

    def node(id_, type_, widgets, inputs=()):
        return {"id": id_, "type": type_, "widgets_values": widgets,
                "inputs": [{"name": n, "link": link} for n, link in inputs]}

    old = {"nodes": [node(1, "UNETLoader", ["tiny_wan21.safetensors", "default"]),
                     node(2, "PersonalVideoLoadIdentityAdapter", [IDENT]),
                     node(3, "PersonalVideoApplyIdentityAdapter", [1.0, 0.75, "steps"],
                          [("model", 1), ("adapter", 2)]),
                     node(4, "PersonalVideoSaveIdentityAdapter", ["old/identity", 0.75], [("adapter", 3)])],
           "links": [[1, 1, 0, 3, 0, "MODEL"], [2, 2, 0, 3, 1, "LORA_MODEL"], [3, 2, 0, 4, 0, "LORA_MODEL"]]}
    prompt = ui_to_api(old)
    assert prompt["3"]["inputs"] == {"model": ["1", 0], "adapter": ["2", 0], "strength": 1.0, "gate_start": 0.75,
                                     "gate_mode": "steps"}
    assert prompt["4"]["inputs"] == {"adapter": ["2", 0], "filename_prefix": "old/identity", "gate_start": 0.75}
    comfy.run(prompt)
