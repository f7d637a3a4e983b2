"""Saving and loading identity adapters as ordinary ComfyUI LoRA files, in real ComfyUI."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dev import tiny_models
from comfy_runtime_errors import graph_error
from graphs import base_graph, gated, install_models, ksampler, lora, rel_err, run_latent


@pytest.fixture(scope="module", autouse=True)
def models(comfy):
    install_models(comfy)


def _save(comfy, family, prefix, with_model=True):
    g, model, pos, neg, latent = base_graph(family)
    adapter = g.add("PersonalVideoLoadIdentityAdapter", lora_name=f"identity_{family}.safetensors")
    inputs = dict(adapter=adapter, filename_prefix=prefix, gate_start=0.75)
    if with_model:
        inputs["model"] = model
    saver = g.add("PersonalVideoSaveIdentityAdapter", **inputs)
    g.capture(saver, "saved_name")
    comfy.run(g.nodes)
    return comfy.captured()["saved_name"]


@pytest.mark.parametrize("family", tiny_models.FAMILIES)
def test_round_trip_matches_core_lora_loader(comfy, family):
    name = _save(comfy, family, f"roundtrip/{family}")
    path = comfy.model_dir("loras") / name
    assert path.is_file() and name.startswith(f"roundtrip/{family}_")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        keys = list(f.keys())
    assert meta["personalvideo.gate_start"] == "0.75"
    assert meta["personalvideo.rank"] == "4" and meta["personalvideo.alpha"] == "4"
    assert meta["personalvideo.base_model"] in ("WAN21_T2V", "HunyuanVideo")
    assert meta["personalvideo.version"]
    assert all(k.startswith("diffusion_model.") for k in keys)

    outs = {}
    for kind in ("ours", "core"):
        g, model, pos, neg, latent = base_graph(family)
        m = gated(g, model, name, start=0.0) if kind == "ours" else lora(g, model, name)
        outs[kind] = run_latent(comfy, g, ksampler(g, m, pos, neg, latent))
    g, model, pos, neg, latent = base_graph(family)
    original = run_latent(comfy, g, ksampler(g, gated(g, model, f"identity_{family}.safetensors", start=0.0),
                                             pos, neg, latent))
    # Ours adds the LoRA in bypass form (x·downᵀ·upᵀ), core merges it into W: equal up to float rounding.
    assert rel_err(outs["ours"], outs["core"]) <= 1e-5
    assert torch.equal(outs["ours"], original), "saving and reloading must not change the adapter"


def test_saved_adapter_also_loads_as_core_hook_lora(comfy):
    name = _save(comfy, "wan21", "hooks/wan")
    g, model, pos, neg, latent = base_graph("wan21")
    hooks = g.add("CreateHookLoraModelOnly", lora_name=name, strength_model=1.0)
    pair = g.add("PairConditioningSetProperties", positive_NEW=pos, negative_NEW=neg, strength=1.0,
                 set_cond_area="default", hooks=hooks)
    out = run_latent(comfy, g, ksampler(g, model, pair, [pair[0], 1], latent))
    g, model, pos, neg, latent = base_graph("wan21")
    ref = run_latent(comfy, g, ksampler(g, lora(g, model, name), pos, neg, latent))
    assert rel_err(out, ref) <= 1e-5


def test_core_lora_model_socket_feeds_the_gate(comfy):
    """A LORA_MODEL as core produces it flows into our apply node, and ours into core's LoraModelLoader."""
    import nodes

    g, model, pos, neg, latent = base_graph("wan21")
    adapter = g.add("PersonalVideoLoadIdentityAdapter", lora_name="identity_wan21.safetensors")
    extra = {}
    if "bypass" in nodes.NODE_CLASS_MAPPINGS["LoraModelLoader"].INPUT_TYPES()["required"]:
        extra["bypass"] = False  # newer ComfyUI: merge into the weights, as 0.3.75 always does
    core = g.add("LoraModelLoader", model=model, lora=adapter, strength_model=1.0, **extra)
    out_core = run_latent(comfy, g, ksampler(g, core, pos, neg, latent))
    g, model, pos, neg, latent = base_graph("wan21")
    out_ours = run_latent(comfy, g, ksampler(g, gated(g, model, "identity_wan21.safetensors", start=0.0),
                                             pos, neg, latent))
    assert rel_err(out_ours, out_core) <= 1e-5


def test_adapter_for_another_family_is_refused_naming_the_file(comfy):
    name = _save(comfy, "hunyuan_video", "family/hv")
    g, model, pos, neg, latent = base_graph("wan21")
    with graph_error() as err:
        run_latent(comfy, g, ksampler(g, gated(g, model, name), pos, neg, latent))
    assert name in err.message and "HunyuanVideo" in err.message and "WAN21" in err.message


def test_lora_without_matching_keys_is_refused(comfy):
    # A HunyuanVideo LoRA with no PersonalVideo metadata: only the keys can tell.
    tiny_models.write_random_lora("hunyuan_video", comfy.model_dir("loras") / "nometa_hv.safetensors")
    g, model, pos, neg, latent = base_graph("wan21")
    with graph_error() as err:
        run_latent(comfy, g, ksampler(g, gated(g, model, "nometa_hv.safetensors"), pos, neg, latent))
    assert "nometa_hv.safetensors" in err.message and "none of its" in err.message


def test_partly_matching_lora_reports_unmatched_keys(comfy, caplog):
    sd = tiny_models.random_lora("wan21")
    sd["diffusion_model.no_such_block.proj.lora_up.weight"] = torch.zeros(4, 4)
    sd["diffusion_model.no_such_block.proj.lora_down.weight"] = torch.zeros(4, 4)
    save_file(sd, str(comfy.model_dir("loras") / "partial.safetensors"))
    g, model, pos, neg, latent = base_graph("wan21")
    with caplog.at_level("WARNING"):
        out = run_latent(comfy, g, ksampler(g, gated(g, model, "partial.safetensors"), pos, neg, latent))
    assert torch.isfinite(out).all()
    assert any("no_such_block" in r.getMessage() and "2 of" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("case", ["truncated", "not_safetensors", "full_model", "empty"])
def test_bad_files_give_clear_errors(comfy, case):
    loras = comfy.model_dir("loras")
    name = f"bad_{case}.safetensors"
    if case == "truncated":
        good = (loras / "identity_wan21.safetensors").read_bytes()
        (loras / name).write_bytes(good[: len(good) // 2])
        expected = "truncated or corrupt"
    elif case == "not_safetensors":
        (loras / name).write_bytes(b"PK\x03\x04 this is a zip, not a safetensors file" * 10)
        expected = "cannot read it as safetensors"
    elif case == "full_model":
        tiny_models.write_diffusion_model("wan21", loras / name)
        expected = "not a LoRA file"
    else:
        save_file({}, str(loras / name))
        expected = "holds no tensors"
    g = base_graph("wan21")[0]
    adapter = g.add("PersonalVideoLoadIdentityAdapter", lora_name=name)
    with graph_error() as err:
        g.capture(adapter, "x")
        comfy.run(g.nodes)
    assert name in err.message and expected in err.message


def test_save_is_atomic_and_never_overwrites(comfy):
    first = _save(comfy, "wan21", "atomic/run")
    second = _save(comfy, "wan21", "atomic/run")
    assert first != second
    folder = comfy.model_dir("loras") / "atomic"
    assert sorted(p.name for p in folder.iterdir()) == sorted([first.split("/")[-1], second.split("/")[-1]])


def test_bad_filename_prefix_is_refused(comfy):
    g = base_graph("wan21")[0]
    adapter = g.add("PersonalVideoLoadIdentityAdapter", lora_name="identity_wan21.safetensors")
    g.add("PersonalVideoSaveIdentityAdapter", adapter=adapter, filename_prefix="../../escape", gate_start=0.75)
    with graph_error() as err:
        comfy.run(g.nodes)
    assert "filename_prefix" in err.message and "'../../escape'" in err.message
