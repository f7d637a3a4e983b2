"""Nodes: apply an identity adapter gated to the end of sampling; save and load adapter files."""

from __future__ import annotations

import os

from comfy_api.latest import io

from .. import __version__
from ..training.adapter.files import IdentityAdapter, build_metadata, load_adapter, save_adapter
from ..training.adapter.gate import GATE_MODES
from . import paths
from .gate import apply_gated_adapter

AREA = paths.CATEGORY + "/Adapter"
META_BASE_MODEL = "personalvideo.base_model"


def model_family(model) -> str:
    """ComfyUI's name for the model's family (its supported-model config class), e.g. ``WAN21_T2V``."""
    return type(model.model.model_config).__name__


def adapter_input(optional: bool = False) -> io.Input:
    return io.LoraModel.Input(
        "adapter", optional=optional,
        tooltip="The identity adapter: from the trainer, from Load Identity Adapter, or any LORA_MODEL "
                "(e.g. from core's Train LoRA / Load LoRA Model nodes).")


class ApplyIdentityAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonalVideoApplyIdentityAdapter",
            display_name="Apply Identity Adapter (Gated)",
            category=AREA,
            description="Adds the identity adapter to the model so that it acts only in the final steps of "
                        "each sampler run (default: the last quarter): motion comes from the base model, "
                        "the face from the adapter. Style LoRAs loaded before or after stay always on.",
            inputs=[
                io.Model.Input("model", tooltip="The video model to sample with (Wan, HunyuanVideo, ...)."),
                adapter_input(),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="Adapter strength once the gate is open (0 = base model)."),
                io.Float.Input("start_percent", default=0.75, min=0.0, max=1.0, step=0.01,
                               tooltip="Where the adapter starts acting. With gate_mode 'steps': from step "
                                       "ceil(start_percent x N) of each sampler run of N steps (0.75 = last "
                                       "quarter, 0 = always on, 1 = never)."),
                io.Combo.Input("gate_mode", options=list(GATE_MODES), default="steps", optional=True,
                               tooltip="'steps': fraction of the running sampler's steps (the method's "
                                       "definition; each sampler node counts its own steps). 'timestep': "
                                       "fraction of the model's timestep range, like core hook keyframes; "
                                       "use it when one sampling is split over two sampler nodes."),
            ],
            outputs=[io.Model.Output(tooltip="The model with the gated identity adapter.")],
        )

    @classmethod
    def execute(cls, model, adapter, strength, start_percent, gate_mode="steps") -> io.NodeOutput:
        source = getattr(adapter, "source", "adapter")
        wanted = getattr(adapter, "metadata", {}).get(META_BASE_MODEL)
        family = model_family(model)
        if wanted and wanted != family:
            raise ValueError(
                f"identity adapter {source}: made for a {wanted} model, but the model connected is {family}; "
                f"connect a {wanted} model or use an adapter trained on {family}.")
        patched, _, _ = apply_gated_adapter(model, adapter, strength, start_percent, gate_mode, source=source)
        return io.NodeOutput(patched)


class SaveIdentityAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonalVideoSaveIdentityAdapter",
            display_name="Save Identity Adapter",
            category=AREA,
            description="Saves the adapter as an ordinary ComfyUI LoRA (.safetensors) in models/loras, with "
                        "the gate start, rank/alpha, base model family and pack version in its header.",
            inputs=[
                adapter_input(),
                io.String.Input("filename_prefix", default="personalvideo/identity",
                                tooltip="Path under models/loras; a counter and .safetensors are appended."),
                io.Float.Input("start_percent", default=0.75, min=0.0, max=1.0, step=0.01,
                               tooltip="Gate start to record in the file (the one the adapter was trained "
                                       "with)."),
                io.Model.Input("model", optional=True,
                               tooltip="The model the adapter belongs to, to record its family so that "
                                       "loading it onto another family fails clearly."),
            ],
            outputs=[io.String.Output(display_name="lora_name",
                                      tooltip="The saved file's name as LoRA loaders list it.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, adapter, filename_prefix, start_percent, model=None) -> io.NodeOutput:
        meta = dict(getattr(adapter, "metadata", {}))
        family = model_family(model) if model is not None else meta.get(META_BASE_MODEL)
        meta.update(build_metadata(adapter, start_percent, family, __version__))
        root = paths.lora_save_dir()
        path = save_adapter(paths.next_free_path(root, filename_prefix), adapter, meta)
        name = os.path.relpath(path, root).replace(os.sep, "/")
        return io.NodeOutput(name, ui={"text": [f"saved {name} ({len(adapter)} tensors)"]})


class LoadIdentityAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonalVideoLoadIdentityAdapter",
            display_name="Load Identity Adapter",
            category=AREA,
            description="Loads an identity adapter (or any ComfyUI LoRA file) from models/loras for the gated "
                        "apply node, and reports what the file says about itself.",
            inputs=[io.Combo.Input("lora_name", options=paths.lora_names(),
                                   tooltip="A .safetensors file in models/loras.")],
            outputs=[
                io.LoraModel.Output(display_name="adapter", tooltip="The adapter, for the apply node."),
                io.String.Output(display_name="info", tooltip="Rank, alpha, gate start, base model family."),
            ],
        )

    @classmethod
    def execute(cls, lora_name) -> io.NodeOutput:
        adapter: IdentityAdapter = load_adapter(paths.lora_path(lora_name), display_name=lora_name)
        meta = {k.removeprefix("personalvideo."): v for k, v in adapter.metadata.items()
                if k.startswith("personalvideo.")}
        info = f"{lora_name}: {len(adapter)} tensors; " + (
            ", ".join(f"{k}={v}" for k, v in sorted(meta.items())) or "no PersonalVideo metadata")
        return io.NodeOutput(adapter, info)


NODES = [ApplyIdentityAdapter, SaveIdentityAdapter, LoadIdentityAdapter]
